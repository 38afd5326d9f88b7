"""Figures of the Train page (plotly), built from run histories and job events. No Streamlit here: the page
lays them out."""

from __future__ import annotations

from resnet_lab import training
from resnet_lab.models.files import display_name


def schedule_figure(cfg: training.TrainConfig, n: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    spe = training.steps_per_epoch(n, cfg.batch_size)
    lrs, moms = training.schedule(cfg, spe)
    stride = max(1, len(lrs) // 1500)  # a few thousand points are plenty for a line
    x = list(range(0, len(lrs), stride)) + ([len(lrs) - 1] if (len(lrs) - 1) % stride else [])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Learning rate", "Momentum (SGD) / β1 (Adam)"))
    fig.add_trace(go.Scatter(x=x, y=lrs[x], name="LR", line=dict(color="#1f77b4")), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=moms[x], name="momentum", line=dict(color="#d62728")), 1, 2)
    peak = int(lrs.argmax())
    for col in (1, 2):
        fig.add_vline(x=peak, line_dash="dot", line_color="gray", row=1, col=col)
        fig.update_xaxes(title_text=f"iteration ({spe} per epoch)", row=1, col=col)
    fig.add_annotation(x=peak, y=float(lrs.max()), text=f"peak: end of epoch {cfg.peak_epoch:g}", showarrow=True,
                       ax=60, ay=-18, xanchor="left", row=1, col=1)
    fig.update_yaxes(exponentformat="e", row=1, col=1)
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), showlegend=False)
    return fig, spe, lrs


def live_figure(batches: list[dict], epochs: list[dict], steps_per_epoch: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Accuracy (%)", "LR and momentum"),
                        specs=[[{}, {}, {"secondary_y": True}]])
    xb = [b["step"] / steps_per_epoch for b in batches]
    xe = [e["progress"] * e["total_epochs"] for e in epochs]  # = the epoch number, or less for a stopped one
    grey, blue, orange = "rgba(120,120,120,0.6)", "#1f77b4", "#ff7f0e"
    mode = "lines+markers" if len(batches) < 40 else "lines"  # the first few points must be visible on their own
    fig.add_trace(go.Scatter(x=xb, y=[b["loss"] for b in batches], name="train (batches)", mode=mode,
                             line=dict(color=grey, width=1), marker=dict(size=4), legendgroup="b"), 1, 1)
    fig.add_trace(go.Scatter(x=xb, y=[100 * b["acc"] for b in batches], name="train (batches)", mode=mode,
                             line=dict(color=grey, width=1), marker=dict(size=4), legendgroup="b",
                             showlegend=False), 1, 2)
    for key, name, color in (("train", "train (epoch)", blue), ("test", "test (epoch)", orange)):
        pts = [(x, e) for x, e in zip(xe, epochs) if f"{key}_loss" in e]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1][f"{key}_loss"] for p in pts], name=name,
                                 mode="lines+markers", line=dict(color=color), legendgroup=key), 1, 1)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[100 * p[1][f"{key}_acc"] for p in pts], name=name,
                                 mode="lines+markers", line=dict(color=color), legendgroup=key, showlegend=False),
                      1, 2)
    fig.add_trace(go.Scatter(x=xb, y=[b["lr"] for b in batches], name="LR", mode=mode, marker=dict(size=4),
                             line=dict(color="#2ca02c")), 1, 3)
    fig.add_trace(go.Scatter(x=xb, y=[b["momentum"] for b in batches], name="momentum", mode=mode,
                             marker=dict(size=4), line=dict(color="#d62728", dash="dot")), 1, 3, secondary_y=True)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_yaxes(tickformat=".3~g", row=1, col=3)
    # A constant (or nearly constant) momentum made plotly pick ticks 0.0005 apart, which ".3~g" printed as the
    # same "0.9" several times: keep the axis at least 0.02 wide, so 3 decimals tell every tick apart.
    moms = [b["momentum"] for b in batches if b.get("momentum") is not None]
    if moms:
        lo, hi = min(moms), max(moms)
        pad = max(0.02 - (hi - lo), 0.0) / 2 + 0.002
        fig.update_yaxes(range=[lo - pad, hi + pad], tickformat=".3f", nticks=5, row=1, col=3, secondary_y=True)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.45))
    return fig


def per_class_figure(run):
    import plotly.graph_objects as go

    classes = run.config.get("classes") or [str(i) for i in range(len(run.metrics["per_class_acc"]))]
    accs = [100 * (a or 0) for a in run.metrics["per_class_acc"]]
    fig = go.Figure(go.Bar(x=accs, y=classes, orientation="h", text=[f"{a:.0f}%" for a in accs],
                           textposition="outside", cliponaxis=False, marker_color="#1f77b4"))
    fig.update_layout(title="Per-class test accuracy", height=320, margin=dict(l=10, r=40, t=40, b=10),
                      xaxis=dict(title="accuracy (%)", range=[0, 100]), yaxis=dict(autorange="reversed"))
    return fig


def history_figure(selected):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test accuracy (%)", "Loss (solid: train, dotted: test)"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for i, r in enumerate(selected):
        color = palette[i % len(palette)]
        name = f"{r.id} ({display_name(r.config.get('model'))})"
        rows = [h for h in r.history if h.get("test_acc") is not None]
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in rows], y=[100 * h["test_acc"] for h in rows], name=name,
                                 mode="lines+markers", line=dict(color=color), legendgroup=r.id), 1, 1)
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in r.history], y=[h["train_loss"] for h in r.history],
                                 name=name, mode="lines+markers", line=dict(color=color), legendgroup=r.id,
                                 showlegend=False), 1, 2)
        fig.add_trace(go.Scatter(x=[h["epoch"] for h in rows], y=[h["test_loss"] for h in rows], name=name,
                                 mode="lines+markers", line=dict(color=color, dash="dot"), legendgroup=r.id,
                                 showlegend=False), 1, 2)
    for col in (1, 2):
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.45))
    return fig
