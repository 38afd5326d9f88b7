"""Figures of the Depth Degradation page (plotly), built from result dicts of resnet_lab.experiments.degradation
and resnet_lab.landscape. No Streamlit here: the page lays them out."""

from __future__ import annotations

from resnet_lab.experiments import degradation as D

PALETTE = {8: "#ff7f0e", 14: "#17becf", 20: "#1f77b4", 32: "#2ca02c", 44: "#9467bd", 56: "#d62728",
           110: "#8c564b"}


def color(depth: int) -> str:
    return PALETTE.get(depth, "#7f7f7f")


def times(v) -> str:
    """A ratio for students: 3.32×, 2,190×, 4,410,000×."""
    return "n/a" if v is None else (f"{v:.3g}×" if v < 1000 else f"{float(f'{v:.3g}'):,.0f}×")


def two_panel_legends(fig, y: float = -0.22) -> None:
    """One legend under each panel (plotly's legend / legend2), so each panel names only its own lines."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=y, x=0.0, xanchor="left"),
                      legend2=dict(orientation="h", yanchor="top", y=y, x=0.53, xanchor="left"))


def init_fig(profile: dict, quantity: str, title: str, log_y: bool, x_title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Plain networks", "Residual networks (ResNet)"))
    for net in profile["nets"]:
        col = 1 if net["family"] == "plain" else 2
        band = net[quantity]
        xs = list(range(len(band["median"])))
        c = color(net["depth"])
        legend = "legend" if col == 1 else "legend2"
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=band["high"] + band["low"][::-1], fill="toself", fillcolor=c,
                                 opacity=0.2, line=dict(width=0), hoverinfo="skip", showlegend=False,
                                 legend=legend), 1, col)
        fig.add_trace(go.Scatter(x=xs, y=band["median"], name=net["label"], mode="lines", line=dict(color=c, width=2),
                                 legend=legend,
                                 hovertemplate="layer %{x}: %{y:.3g}<extra>" + net["label"] + "</extra>"), 1, col)
    for col in (1, 2):
        fig.update_xaxes(title_text=x_title, row=1, col=col)
    fig.update_yaxes(title_text=title, type="log" if log_y else "linear", row=1, col=1)
    fig.update_yaxes(type="log" if log_y else "linear", row=1, col=2)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10))
    two_panel_legends(fig, y=-0.25)
    return fig


def fig6(result: dict, height: int = 400):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Plain networks", "Residual networks (ResNet)"))
    for sr in D.fig6_series(result):
        col = 1 if sr["panel"] == "plain" else 2
        fig.add_trace(go.Scatter(x=sr["epochs"], y=sr["error_pct"], name=f"{sr['label']} {sr['kind']}",
                                 mode="lines+markers", legend="legend" if col == 1 else "legend2",
                                 line=dict(color=color(sr["depth"]), dash=sr["dash"], width=sr["width"]),
                                 marker=dict(size=4 if sr["kind"] == "train" else 6)), 1, col)
    max_epoch = max((len(n.get("history") or []) for n in result.get("nets", [])), default=0)
    for col in (1, 2):
        fig.update_xaxes(title_text="epoch", row=1, col=col, dtick=1 if max_epoch <= 12 else None)
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10))
    # inside each panel, bottom left: error curves start high, so that corner stays free
    box = dict(yanchor="bottom", y=0.02, xanchor="left", bgcolor="rgba(255,255,255,0.7)", font=dict(size=11))
    fig.update_layout(legend=dict(x=0.01, **box), legend2=dict(x=0.54, **box))
    return fig


def per_layer(result: dict, when: str, quantity: str, title: str, log_y: bool):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    series = D.fig7_series(result, when=when, quantity=quantity)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=(f"{title} — layers in network order", f"{title} — sorted, largest first"))
    for sr in series:
        style = dict(color=color(sr["depth"]), dash="solid" if sr["family"] == "plain" else "dot", width=2)
        fig.add_trace(go.Scatter(x=sr["layer_index"], y=sr["values"], name=sr["label"], mode="lines+markers",
                                 marker=dict(size=3), line=style, legendgroup=sr["model"],
                                 text=sr["layers"], hovertemplate="%{text}: %{y:.3g}<extra>" + sr["label"] + "</extra>"),
                      1, 1)
        fig.add_trace(go.Scatter(x=sr["layer_index"], y=sr["sorted_values"], name=sr["label"], mode="lines",
                                 line=style, legendgroup=sr["model"], showlegend=False), 1, 2)
    for col in (1, 2):
        fig.update_xaxes(title_text="layer index (3×3 conv → BN)" if col == 1 else "rank", row=1, col=col)
        fig.update_yaxes(title_text=title if col == 1 else None, type="log" if log_y else "linear",
                         dtick=1 if log_y else None, row=1, col=col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig, series


def landscape_fig_1d(result: dict):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, net in enumerate(result["nets"]):
        if net.get("line") is None:
            continue
        c = "#d62728" if (net.get("model") or "").startswith("plain") else "#1f77b4"
        fig.add_trace(go.Scatter(x=result["line_axis"], y=net["line"], name=net["label"], mode="lines+markers",
                                 line=dict(color=c, width=2, dash="solid" if i == 0 else "dot")))
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=30, b=10), title="1-D slice along direction 1",
                      xaxis_title="step along the filter-normalised direction (α)",
                      yaxis_title="training loss (cross-entropy, log)", yaxis=dict(type="log", dtick=1),
                      legend=dict(orientation="h", yanchor="top", y=-0.25))
    return fig


def landscape_fig_2d(result: dict, style: str):
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    nets = [n for n in result["nets"] if n.get("grid")]
    axis = result["grid_axis"]
    grids = [np.log10(np.array([[np.nan if v is None else v for v in row] for row in n["grid"]], dtype=float))
             for n in nets]
    lo = float(np.nanmin([np.nanmin(g) for g in grids])) if grids else 0.0
    hi = float(np.nanmax([np.nanmax(g) for g in grids])) if grids else 1.0
    titles = tuple(f"{n['label']} (log10 loss)" for n in nets)
    if style == "surface":
        fig = make_subplots(rows=1, cols=len(nets), specs=[[{"type": "surface"}] * len(nets)], subplot_titles=titles)
        for i, g in enumerate(grids):
            fig.add_trace(go.Surface(x=axis, y=axis, z=g, cmin=lo, cmax=hi, colorscale="Viridis",
                                     showscale=i == 0, colorbar=dict(title="log10 loss")), 1, i + 1)
        scene = dict(xaxis_title="α (direction 1)", yaxis_title="β (direction 2)", zaxis_title="log10 loss",
                     zaxis=dict(range=[lo, hi]))
        fig.update_layout(scene=scene, **({"scene2": scene} if len(nets) > 1 else {}))
    else:
        fig = make_subplots(rows=1, cols=len(nets), subplot_titles=titles, horizontal_spacing=0.1)
        for i, g in enumerate(grids):
            fig.add_trace(go.Contour(x=axis, y=axis, z=g, zmin=lo, zmax=hi, colorscale="Viridis", ncontours=25,
                                     showscale=i == 0, colorbar=dict(title="log10 loss"),
                                     contours=dict(showlabels=True)), 1, i + 1)
            fig.update_xaxes(title_text="α (direction 1)", row=1, col=i + 1)
            fig.update_yaxes(title_text="β (direction 2)", row=1, col=i + 1, scaleanchor=f"x{i + 1 if i else ''}")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10))
    return fig
