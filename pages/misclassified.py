"""Misclassified: the run's stored test predictions as a workbench — accuracy, confusion matrix, a gallery of mistakes.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import inspect_ui as ui
import lab_ui
import report_ui

from resnet_lab import inspect as I
from resnet_lab import metrics as M

lab_ui.page_intro(
    "Misclassified",
    idea="A single accuracy number hides *which* mistakes a network makes. The **confusion matrix** counts, for "
         "every true class (row), what the network predicted (column): the diagonal is right, everything else is "
         "a mistake. The **gallery** shows the mistakes themselves, the most confidently wrong first.",
    try_="Click a cell of the confusion matrix (or use the two class boxes) to see exactly those mistakes. Sort by "
         "loss, then by confidence. Open an image to see its top-5 and where the network looked for the predicted "
         "and the true class.",
    notice="Mistakes are not random: the most confused pairs are usually similar classes (cat ↔ dog, automobile ↔ "
           "truck). Top-3 accuracy is much higher than top-1: the right answer is often the network's second "
           "guess. Some 'mistakes' are labels you would dispute yourself.",
)

run = ui.pick_run(need_checkpoint=False)
ctx = ui.run_context(run)
pred, classes = ctx.pred, ctx.classes
n_classes = len(classes)
confusion = M.confusion_matrix(pred["labels"], pred["preds"], n_classes)
top = M.topk_accuracy(pred["probs"], pred["labels"], (1, 3, 5))
n, n_wrong = len(pred["labels"]), int((~pred["correct"]).sum())

# ------------------------------------------------------------------------------------------------- headline
m1, m2, m3, m4 = st.columns(4)
m1.metric("Top-1 accuracy", f"{100 * top[1]:.1f}%", help="The most probable class is the true one.")
m2.metric("Top-3 accuracy", f"{100 * top[3]:.1f}%", help="The true class is among the 3 most probable.")
m3.metric("Top-5 accuracy", f"{100 * top[5]:.1f}%", help="The true class is among the 5 most probable.")
m4.metric(f"Mistakes (of {n:,})", f"{n_wrong:,}", help="Test images whose most probable class is wrong.")
source_text = "the class server's data" if lab_ui.class_server() else ctx.source  # no server path to students
st.caption(f"From the run's stored predictions on {n:,} test images ({source_text}); nothing is re-evaluated.")
if run.has_checkpoint and not run.reference:
    report_ui.panel(run, "mis")  # the hand-in: this gallery's mistakes, Grad-CAM, curves and the check in a zip

chart_left, chart_right = st.columns([2, 3], gap="large")
with chart_left:
    acc = M.per_class_accuracy(confusion)
    fig = go.Figure(go.Bar(x=[100 * (0 if np.isnan(a) else a) for a in acc], y=classes, orientation="h",
                           marker_color="#1f77b4", text=[("–" if np.isnan(a) else f"{100 * a:.0f}%") for a in acc],
                           textposition="auto", hovertemplate="%{y}: %{x:.1f}% right<extra></extra>"))
    fig.update_layout(title="Accuracy per true class (%)", height=420, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(range=[0, 100]), yaxis=dict(autorange="reversed"))
    st.plotly_chart(fig, key="per_class_chart", config={"displayModeBar": False})

with chart_right:
    norm = st.radio("Confusion matrix", ["counts", "% of each true class"], key="cm_mode", horizontal=True)
    z = confusion if norm == "counts" else 100 * M.normalize_confusion(confusion)
    text = [[f"{int(v)}" if norm == "counts" else f"{v:.0f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=classes, colorscale="Blues", text=text, texttemplate="%{text}",
                               hoverinfo="skip", showscale=False))
    # Heatmap cells do not report clicks to st.plotly_chart; an invisible marker on every cell does.
    xx, yy = np.meshgrid(np.arange(n_classes), np.arange(n_classes))
    fig.add_trace(go.Scatter(
        x=[classes[i] for i in xx.ravel()], y=[classes[i] for i in yy.ravel()], mode="markers",
        marker=dict(symbol="square", size=max(12, 300 // n_classes), color="rgba(0,0,0,0)"),
        customdata=confusion.ravel(), showlegend=False,
        hovertemplate="true %{y} → predicted %{x}: %{customdata} images<extra>click to filter</extra>"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select",
                      xaxis=dict(title="predicted class", side="bottom"),
                      yaxis=dict(title="true class", autorange="reversed"))
    event = st.plotly_chart(fig, key="cm_chart", on_select="rerun", selection_mode="points",
                            config={"displayModeBar": False})
    points = list(getattr(getattr(event, "selection", None), "points", None) or [])
    if points:
        picked = (points[0].get("y"), points[0].get("x"))
        if picked != st.session_state.get("_cm_applied") and picked[0] in classes and picked[1] in classes:
            # apply a click once: later changes of the boxes below must not be undone by the stale selection
            st.session_state["_cm_applied"] = picked
            st.session_state["filter_true"], st.session_state["filter_pred"] = picked
            st.session_state["only_wrong"] = picked[0] != picked[1]
            st.session_state["gallery_page"] = 1

with st.expander("Most confused pairs", expanded=True):
    min_count = st.number_input("At least this many times", 1, max(1, n), 1, key="mc_min")
    pairs = M.most_confused(confusion, classes, int(min_count))
    if pairs:
        st.dataframe([{"true class": t, "predicted as": p, "images": c,
                       "% of true class": 100 * c / max(1, int(confusion[classes.index(t)].sum()))}
                      for t, p, c in pairs[:20]], hide_index=True, width="stretch",
                     column_config={"% of true class": st.column_config.NumberColumn(format="%.1f%%")})
        if len(pairs) > 20:
            st.caption(f"… and {len(pairs) - 20} more pairs.")
    else:
        st.caption(f"No pair of classes is confused {int(min_count)} times or more.")

# -------------------------------------------------------------------------------------------------- gallery
st.header("Gallery", divider="gray")
ANY = "any"
f1, f2, f3, f4, f5 = st.columns([1.8, 1.8, 1.3, 2.1, 1])
true_name = f1.selectbox("True class", [ANY, *classes], key="filter_true")
pred_name = f2.selectbox("Predicted class", [ANY, *classes], key="filter_pred")
st.session_state.setdefault("only_wrong", True)  # set here, not as value=: a matrix click also sets it
only_wrong = f3.toggle("Only mistakes", key="only_wrong")
SORT_LABELS = {"loss": "most wrong first", "confidence": "most confident first",
               "index": "test index"}
sort = f4.selectbox("Sort by", list(SORT_LABELS), key="sort", format_func=SORT_LABELS.get,
                    help="Loss = −log p(true class): large when the network was confident and wrong.")
page_size = f5.selectbox("Per page", [12, 24, 48, 96], index=1, key="page_size")

rows = I.filter_predictions(pred, None if true_name == ANY else classes.index(true_name),
                            None if pred_name == ANY else classes.index(pred_name), only_wrong, sort)
pages = max(1, -(-len(rows) // page_size))
st.session_state["gallery_page"] = min(max(int(st.session_state.get("gallery_page", 1)), 1), pages)
p1, p2, p3 = st.columns([1, 2, 2])
page = p1.number_input(f"Page (of {pages})", 1, pages, key="gallery_page")
p2.markdown(f"**{len(rows):,}** image(s) match" + (" — click **Open** under an image for its details." if len(rows)
                                                     else "."))
csv_name = f"{run.id}-{'mistakes' if only_wrong else 'predictions'}.csv"
p3.download_button(f"Download these {len(rows):,} as CSV", data=I.predictions_csv(pred, rows, classes),
                   file_name=csv_name, mime="text/csv", key="export_csv", icon=":material/download:",
                   disabled=not len(rows))

OPEN_KEY = "open_index"
row_of = {int(i): r for r, i in enumerate(pred["indices"])} if st.session_state.get(OPEN_KEY) is not None else {}


def _open(index: int) -> None:
    st.session_state[OPEN_KEY] = index


gallery, detail = st.columns([5, 3], gap="large")
with gallery:
    shown = rows[(page - 1) * page_size: page * page_size]
    if not len(shown):
        st.info("No image matches these filters." + (" Turn off **Only mistakes** to include the ones it gets "
                                                     "right." if only_wrong else ""))
    per_row = 5  # ~120 px thumbnails on a laptop screen: big enough to recognise a 32 px image
    for start in range(0, len(shown), per_row):
        cols = st.columns(per_row)
        for col, r in zip(cols, shown[start:start + per_row]):
            r = int(r)
            idx, t, p = int(pred["indices"][r]), int(pred["labels"][r]), int(pred["preds"][r])
            with col:
                st.image(I.upscale(ctx.images[r], 4), width="stretch")  # 128 px, nearest: crisp pixels
                colour = "green" if t == p else "red"
                st.caption(f"#{idx} · {classes[t]} → :{colour}[**{classes[p]}**] "
                           f"{100 * float(pred['confidence'][r]):.0f}%")
                st.button("Open", key=f"open_{idx}", on_click=_open, args=(idx,), width="stretch")

with detail:
    index = st.session_state.get(OPEN_KEY)
    r = row_of.get(index) if index is not None else None
    if r is None:
        st.info("Open an image from the gallery to see its top-5 probabilities and Grad-CAM for the predicted "
                "and the true class.", icon=":material/left_click:")
    else:
        t, p = int(pred["labels"][r]), int(pred["preds"][r])
        st.subheader(f"Test image #{index}")
        st.image(I.upscale(ctx.images[r], 8), width=256,
                 caption=f"true {classes[t]} · predicted {classes[p]} · loss {float(pred['loss'][r]):.2f}")
        ui.top5_chart(pred["probs"][r], classes, t, key="detail_top5")
        tta = bool(run.config.get("tta"))  # two different numbers on one screen must say where each comes from
        views = "its mirror" + (" and two 1-px shifts" if run.config.get("tta_shift") else "")
        st.caption("Stored with the run: its final evaluation" +
                   (f", averaged over the image and {views} (test-time augmentation)." if tta else
                    ", one forward pass of the image."))
        if not run.has_checkpoint:
            st.caption("This run saved no weights, so there is no Grad-CAM to show.")
        else:
            dctx = ui.run_context(run, need_model=True)
            layer = dctx.stages[-1] if dctx.stages else None
            if layer is not None:
                targets = [p] if p == t else [p, t]
                cams = I.gradcams(dctx.model, ctx.images[r], layer, targets, ctx.mean, ctx.std, relu=True)
                st.markdown(f"**Grad-CAM** at `{layer}` ({cams[0].grid[0]}×{cams[0].grid[1]} cells; more on the "
                            "Grad-CAM page)")
                cols = st.columns(len(cams))
                for col, cam, role in zip(cols, cams, ["predicted", "true"]):
                    with col:
                        st.image(I.overlay(ctx.images[r], cam.normalized, 0.5, size=192), width="stretch")
                        st.caption(f"{role}: **{classes[cam.target]}** ({cam.probs[cam.target]:.0%} on this image "
                                   f"alone, computed now{'; the stored figure above is averaged with ' + views if tta else ''})")
                        if cam.constant:
                            st.caption(cam.note)
        b1, b2 = st.columns([1, 2])
        b1.button("Close", key="close_detail", on_click=_open, args=(None,), width="stretch")
        if run.has_checkpoint and b2.button("Grad-CAM", key="to_gradcam", icon=":material/arrow_forward:",
                                            width="stretch", help="Open this image on the Grad-CAM page"):
            ui.open_on_page(run, r, "../pages/gradcam.py")
