"""The Grad-CAM page's pictures, figures and texts, built from resnet_lab.inspect and resnet_lab.attributions
results. No Streamlit here: the page (pages/gradcam.py) lays them out; inspect_ui has what the three
"Look inside" pages share."""

from __future__ import annotations

import numpy as np

from resnet_lab import attributions as A
from resnet_lab import inspect as I

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
    """(title, class) of each row of the five methods: the first map's class, then the second's if it differs."""
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
            f"(1 = same ranking of pixels, 0 = unrelated). Steps here: {', '.join(f'`{s}`' for s in steps)}.")


def sanity_figure(check, methods: list[str]):
    """Each method's correlation with the trained map after each re-initialisation step."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for m in methods:
        fig.add_trace(go.Scatter(x=check.steps, y=check.correlations[m], mode="lines+markers", name=m))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[-1.05, 1.05],
                      title="Spearman ρ with the trained map"), xaxis=dict(title="re-initialised so far (top down)"),
                      legend=dict(orientation="h", y=-0.3))
    return fig


def sanity_text(check, methods: list[str]) -> str:
    """Which methods still correlate with the trained map once every layer is random (attributions.sanity_verdict:
    a picture of the image), and which changed."""
    v = A.sanity_verdict(check, methods)
    stay, gone = v["image"], v["model"]
    summary = ", ".join(f"{m} {v['final'][m]:.2f}" for m in methods)
    return (f"With every layer random, the correlation with the trained map is: {summary}. "
            + (f"**{', '.join(stay)}** still correlate{'s' if len(stay) == 1 else ''} at {A.SANITY_RHO:g} or more: "
               "that part of the map comes from the image, not from what the network learned. " if stay else "")
            + (f"{', '.join(gone)} changed: they do depend on the trained weights." if gone else ""))
