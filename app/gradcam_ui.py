"""The Grad-CAM page's pictures, figures and texts, built from resnet_lab.inspect and resnet_lab.attributions
results. No Streamlit here: the page (pages/gradcam.py) lays them out; inspect_ui has what the three
"Look inside" pages share."""

from __future__ import annotations

import numpy as np

from resnet_lab import attributions as A
from resnet_lab import explain as E
from resnet_lab import faithfulness as F
from resnet_lab import inspect as I
from resnet_lab.runs import RunError

SWEEP_SIZE = 192  # px per sweep panel: a multiple of 32, so every input pixel is a whole square


def _cells(cam: I.CamResult) -> str:
    h, w = cam.grid
    return f"{h}×{w} cells, {32 // max(h, 1)} px apart"


def cam_caption(cam: I.CamResult, role: str, classes: list, rf_table) -> str:
    """'Predicted class: **cat** (62.0%) · `layer3` map of 8×8 cells, 4 px apart; each cell sees …'."""
    rf = I.layer_rf(rf_table, cam.layer)
    seen = f"; each cell sees up to {rf['size'][0]}×{rf['size'][1]} px" if rf else ""
    return (f"{role}: **{classes[cam.target]}** ({cam.probs[cam.target]:.1%}) · `{cam.layer}` map of "
            f"{_cells(cam)}{seen}")


def branch_text(layer: str, branch: str, class_name: str) -> str:
    """What the sum x + F(x) and the branch F(x) alone are, before their two maps."""
    after = "" if branch.endswith(".res") else " (He et al.'s block then applies a ReLU to the sum)"
    return (f"`{layer}` outputs the **sum** x + F(x): the shortcut x plus what its residual branch adds{after}. "
            "That is what the next layer (and in the end the classifier) sees. "
            f"`{branch}` is the **branch** F(x) alone, before the addition. Same image, same class "
            f"(**{class_name}**):")


def agreement_caption(rho: float) -> str:
    """The Spearman correlation of the sum's and the branch's maps, in words (attributions.agreement)."""
    agree = A.agreement(rho)
    if agree is None:
        return "One of the two maps is constant, so their rankings cannot be compared."
    return (f"Spearman rank correlation of the two maps: {rho:.2f} — {agree}. Where they differ, the "
            "shortcut carries evidence that a map of the branch alone would miss.")


def sweep_panel(image: np.ndarray, cam: I.CamResult, rf_table, alpha: float, signed: bool) -> tuple[np.ndarray, str]:
    """One stage of the layer sweep, drawn as blocks: the strongest cell in yellow, its receptive field in white
    (no boxes on a constant map). Returns the picture and its caption."""
    scale = SWEEP_SIZE // 32
    picture = I.overlay(image, cam.normalized, alpha, signed=signed, size=SWEEP_SIZE, smooth=False)
    box = None if cam.constant else I.cell_box(rf_table, cam.layer, cam.peak_cell())
    if box is not None:
        picture = I.draw_box(picture, box, color=(255, 255, 255), width=2, scale=scale)
    if not cam.constant:  # the strongest cell itself: its footprint on the input grid
        (r, c), (sr, sc) = cam.peak_cell(), (32 // cam.grid[0], 32 // cam.grid[1])
        picture = I.draw_box(picture, (r * sr, (r + 1) * sr - 1, c * sc, (c + 1) * sc - 1),
                             color=(255, 221, 0), width=2, scale=scale)
    rf = I.layer_rf(rf_table, cam.layer)
    whole = box is not None and box == (0, 31, 0, 31)
    caption = (f"`{cam.layer}` · {_cells(cam)}" + (f" · RF {rf['size'][0]} px" if rf else "")
               + (" (the whole image)" if whole else "") + (" · constant map" if cam.constant else ""))
    return picture, caption


def method_rows(cams: list, roles: list[str], classes: list) -> list[tuple[str, int]]:
    """(title, class) of each row of the methods: the first map's class, then the second's if it differs."""
    rows = [(f"{roles[0].lower()} · {classes[cams[0].target]}", cams[0].target)]
    second = cams[1].target if len(cams) > 1 else None
    if second is not None and second != cams[0].target:
        rows.append((f"{roles[1].lower()} · {classes[second]}", second))
    return rows


def sanity_intro(steps: list[str]) -> str:
    return ("Adebayo et al. (2018, *Sanity Checks for Saliency Maps*) replace a trained network's weights by random "
            "ones, one layer at a time **from the top** (the classifier) down, and recompute each map for the same "
            "image and class. An explanation *of the model* must change as the model is destroyed; a map that stays "
            "the same is mostly a picture of the image (an edge detector), whatever the network learned. The number "
            "is the **Spearman rank correlation** between the trained network's map and the map after each step "
            f"(1 = same ranking of pixels, 0 = unrelated). Steps here: {', '.join(f'`{s}`' for s in steps)}. "
            "The paper's finding: **Guided Backprop** barely changes — check whether it does here.")


def _names(methods: list[str], values: dict) -> str:
    return ", ".join(f"**{m}** ({values[m]:.2f})" for m in methods)


def sanity_figure(check, methods: list[str]):
    """Each method's correlation with the trained map after each re-initialisation step; the methods that fail
    the check drawn thick, those that pass dashed, with the two bounds the verdict uses."""
    import plotly.graph_objects as go

    v = A.sanity_verdict(check, methods)
    fig = go.Figure()
    for m in methods:
        width, dash = (4, "solid") if m in v["fail"] else (1.5, "dash") if m in v["pass"] else (2, "solid")
        fig.add_trace(go.Scatter(x=check.steps, y=check.correlations[m], mode="lines+markers", name=m,
                                 line=dict(width=width, dash=dash)))
    for bound, words in ((A.FAIL_RHO, "barely changed"), (A.SANITY_RHO, "half the ranking left")):
        fig.add_hline(y=bound, line=dict(color="grey", width=1, dash="dot"), annotation_text=f"{words} (ρ {bound:g})",
                      annotation_position="bottom right")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[-1.05, 1.05],
                      title="Spearman ρ with the trained map"), xaxis=dict(title="re-initialised so far (top down)"),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def sanity_text(check, methods: list[str]) -> str:
    """The check read from its own numbers (attributions.sanity_verdict): which methods fail (barely change when
    the classifier is random, or survive every layer), which partly survive, which pass."""
    v = A.sanity_verdict(check, methods)
    first = check.steps[1] if len(check.steps) > 1 else "the first part"
    parts = []
    if v["fail"]:
        parts.append(f"**Fails the check:** {_names(v['fail'], v['first'])} after re-initialising `{first}` "
                     f"(ρ {A.FAIL_RHO:g} or more, or still {A.SANITY_RHO:g} or more with every layer random: "
                     f"{_names(v['fail'], v['final'])}). The weights that decide the class are gone and the map "
                     "hardly moved: it shows the image's edges, not what the network learned.")
    if v["partly"]:
        parts.append(f"**Partly survives:** {_names(v['partly'], v['first'])} after `{first}`, then "
                     f"{_names(v['partly'], v['final'])} with every layer random. Much of the map follows the "
                     "image itself (methods that multiply by the input, or trace its edges).")
    if v["pass"]:
        parts.append(f"**Passes:** {_names(v['pass'], v['first'])} after `{first}`: these maps change as soon as "
                     "the classifier is random, so they depend on the trained weights.")
    undefined = [m for m in methods if m not in v["fail"] + v["partly"] + v["pass"]]
    if undefined:
        parts.append(f"{', '.join(undefined)}: a map became constant (all zero), so no ranking could be compared.")
    return "\n\n".join(parts)


def data_text(result, methods: list[str]) -> str:
    """The data-randomisation test read from its numbers (attributions.data_verdict)."""
    v = A.data_verdict({m: result.correlations[m] for m in methods})
    parts = []
    if v["fail"]:
        parts.append(f"**Fails:** {_names(v['fail'], result.correlations)}: the network that learned nothing about "
                     f"the classes draws nearly the same map (ρ {A.SANITY_RHO:g} or more).")
    if v["pass"]:
        parts.append(f"**Passes:** {_names(v['pass'], result.correlations)}: the map changes when the labels "
                     "carried no information.")
    return "\n\n".join(parts) or "Every map was constant for one of the networks: no ranking to compare."


def faithfulness_rows(result: dict) -> list[dict]:
    """The ROAD table (explain JSON's ``faithfulness``), best method first."""
    f = result["faithfulness"]
    return [{"method": m, "MoRF (lower better)": f["mean"][m]["morf_area"],
             "LeRF (higher better)": f["mean"][m]["lerf_area"], "ROAD (higher better)": f["mean"][m]["road"]}
            for m in f["ranking"]]


def faithfulness_figure(result: dict):
    """MoRF and LeRF curves of every method (and the random-order baseline), class probability vs removed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    f = result["faithfulness"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("most relevant removed first (MoRF)", "least relevant removed first (LeRF)"))
    for i, (m, c) in enumerate(f["mean"].items()):
        dash = "dot" if m == E.RANDOM_ORDER else "solid"
        color = f"hsl({int(360 * i / len(f['mean']))},65%,45%)"
        for col, key in ((1, "morf"), (2, "lerf")):
            fig.add_trace(go.Scatter(x=[100 * x for x in c["fractions"]], y=c[key], name=m, legendgroup=m,
                                     showlegend=col == 1, line=dict(dash=dash, color=color)), 1, col)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.35))
    fig.update_yaxes(title_text="class probability", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="pixels removed (%)")
    return fig


DATA_INTRO = ("The paper's second test: train the **same architecture on shuffled labels** — it can only memorise "
              "the training images, and says nothing true about a test image's class — then explain the same image "
              "with both networks. A map that looks the same for both does not depend on what the labels taught. "
              "The app ships such a network for ResNet-20 (trained on the CPU; its command is in the runs table's "
              f"`{E.SHUFFLED_RUN}` entry).")
ROAD_INTRO = ("A map can look right and still not be what the network uses. **ROAD** (Rong et al. 2022, computed by "
              "[pytorch-grad-cam](https://github.com/jacobgil/pytorch-grad-cam)) removes 10 %, 20 % … 90 % of the "
              "pixels in the map's order, fills them in from their neighbours (no black squares, which would be "
              "evidence of their own) and watches the class probability. A faithful map's first pixels carry the "
              "evidence: removing them first (MoRF) makes the probability fall fast, removing the last ones first "
              "(LeRF) keeps it up. `random order` is the baseline every method should beat.")
ROAD_ABOUT = {**F.ABOUT, E.RANDOM_ORDER: "the same test with the pixels in a random order: what no map at all gives"}


def shuffled_problem(run) -> str | None:
    """Why the data-randomisation test is not offered for this run (None: it is)."""
    try:
        E.shuffled_run(run.config.get("model"))
    except RunError as exc:
        return str(exc)
    return None


def measured_title(stored: dict) -> str:
    r = stored["result"]
    return f"Measured on the reference run: {len(r['images'])} test images, the mean (`python -m resnet_lab explain`)"


def measured_text(stored: dict) -> str:
    """What the stored measurement found, from its own numbers."""
    r = stored["result"]
    first = r["sanity"]["after_first_step"]
    v = r["sanity"]["verdict"]
    fail = ", ".join(f"**{m}** {first[m]:.2f}" for m in v["fail"]) or "none"
    passed = ", ".join(f"{m} {first[m]:.2f}" for m in v["pass"]) or "none"
    step = r["sanity"]["steps"][1]
    return (f"Mean ρ after re-initialising `{step}` alone — fails: {fail}; passes: {passed}. "
            f"Measured with `{stored['command']}` on {stored['hardware']}, {stored['date']}. One image can differ "
            "from this mean: the random weights of one step point one way for one class.")


def measured_rows(stored: dict) -> list[dict]:
    """One row per method: sanity rho after the first step and at the end, data-randomisation rho, ROAD score."""
    r = stored["result"]
    s, d, f = r["sanity"], r.get("data_randomisation") or {}, r.get("faithfulness") or {}
    rows = []
    for m in r["methods"]:
        rows.append({"method": m, f"ρ after {s['steps'][1]}": s["after_first_step"][m],
                     "ρ all random": s["mean"][m][-1],
                     "ρ shuffled labels": (d.get("mean") or {}).get(m),
                     "ROAD": ((f.get("mean") or {}).get(m) or {}).get("road")})
    return rows
