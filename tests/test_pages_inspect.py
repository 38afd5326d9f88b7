"""The three "Look inside" pages (Activations, Grad-CAM, Misclassified) through AppTest and a real browser.

A real run is trained once for the module on the tiny class-folder data (ResNet-20, 2 epochs), plus a real
custom_resnet with in-place ReLUs saved through the RunStore with its real predictions.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import assert_no_exception, load_with_own_cache, settle, wait_for_count, wait_for_script

PAGES = ["activations", "gradcam", "misclassified"]


def app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file("../app/Home.py", default_timeout=90)


def text(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def ok(at) -> None:
    assert not at.exception, text(at.exception)


def open_page(page: str, run_id: str | None = None):
    at = app().run()
    at.switch_page(f"../pages/{page}.py").run()
    ok(at)
    if run_id is not None and at.selectbox(key="inspect_run").value != run_id:
        at.selectbox(key="inspect_run").set_value(run_id).run()
        ok(at)
    return at


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _train_tiny(data, store):
    from resnet_lab.training import preset, train

    # 3 short epochs at a gentler LR than the preset's: ~85% on the tiny data, so the gallery holds a mix of
    # right and wrong answers rather than one class predicted for everything
    return train(preset("quick-cpu", subset=200, test_subset=100, epochs=3, peak_epoch=1, model="resnet20",
                        batch_size=20, lr_max=0.05, lr_min=0.005), data=data, store=store)


def _save_inplace_custom(data, store, data_dir):
    """A real custom_resnet with in-place ReLUs and its real predictions, saved like the trainer saves a run."""
    import torch

    from resnet_lab.models import build
    from resnet_lab.training import predict

    torch.manual_seed(1)
    model = build("custom_resnet", inplace_relu=True).eval()
    probs = predict(model, data.test_x, data.mean, data.std, torch.device("cpu"))
    run = store.create({"model": "custom_resnet", "model_options": {"inplace_relu": True},
                        "classes": data.classes, "mean": list(data.mean), "std": list(data.std),
                        "data": str(data_dir), "data_source": data.source, "preset": None}, prefix="custom-inplace")
    store.save_checkpoint(run, model.state_dict())
    store.save_predictions(run, probs, data.test_y, data.test_index)
    store.save_metrics(run, {"top1": float((probs.argmax(1) == data.test_y).mean())})
    store.set_status(run, "done")
    return run


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_data_dir):
    from resnet_lab.runs import RunStore

    base = tmp_path_factory.mktemp("inspect-pages")
    data = load_with_own_cache(tiny_data_dir, base / "cache")
    store = RunStore(base / "runs")
    inplace = _save_inplace_custom(data, store, tiny_data_dir)
    time.sleep(0.05)
    trained = _train_tiny(data, store)  # the newest: the pages' default
    assert trained.status == "done" and trained.has_predictions
    return SimpleNamespace(runs=base / "runs", cache=base / "cache", data_dir=tiny_data_dir, data=data,
                           run=trained, inplace=inplace, pred=trained.predictions())


@pytest.fixture
def lab_env(lab, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_DATA", str(lab.data_dir))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(lab.cache))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(lab.runs))
    return lab


# -------------------------------------------------------------------------------------------------- no run yet

@pytest.mark.parametrize("page", PAGES)
def test_without_a_run_each_page_says_so_and_offers_training(page, tiny_data_env, runs_dir):
    at = open_page(page)
    assert "No trained network yet" in text(at.info)
    assert at.button(key="inspect_quick_train").label.startswith("Train a quick-cpu run")
    assert not at.metric and not at.error


@pytest.mark.parametrize("page", PAGES)
def test_without_a_run_of_ones_own_each_page_opens_the_shipped_reference(page, lab, tmp_path, monkeypatch):
    import json

    from resnet_lab.runs.reference import write_checksums

    folder = tmp_path / "reference" / "reference"
    shutil.copytree(lab.run.path, folder)
    (folder / "about.json").write_text(json.dumps({
        "title": "ResNet-20 reference (test copy)", "command": "python -m resnet_lab train --preset quick-cpu",
        "data": "tiny class folders", "hardware": "2 CPU cores", "date": "2026-11-30",
        "top1": lab.run.metrics["top1"], "notes": ""}))
    write_checksums(folder)
    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(folder.parent))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(tmp_path / "no-runs-yet"))
    monkeypatch.setenv("RESNET_LAB_DATA", str(lab.data_dir))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(lab.cache))
    at = open_page(page)
    assert at.selectbox(key="inspect_run").value == "reference"
    note = text(at.info)
    assert "Reference run shipped with the app" in note and "python -m resnet_lab train --preset quick-cpu" in note
    assert f"{lab.run.metrics['top1']:.1%}" in note and "No trained network yet" not in note


def test_one_click_quick_training_makes_the_page_work(tiny_data_env, runs_dir):
    from resnet_lab.runs import RunStore

    at = open_page("misclassified")
    at.button(key="inspect_quick_train").click().run()
    ok(at)
    assert at.button(key="inspect_quick_train").disabled  # one job per session
    deadline = time.monotonic() + 240
    run = None
    while time.monotonic() < deadline:
        run = RunStore().latest(with_predictions=True)
        if run is not None and run.status == "done":
            break
        time.sleep(0.5)
    assert run is not None and run.status == "done", "the quick-cpu job did not finish"
    assert run.config["preset"] == "quick-cpu" and run.config["model"] == "resnet20"
    time.sleep(0.5)  # the job thread marks itself done just after the run is saved
    at.run()
    ok(at)
    assert "Top-1 accuracy" in [m.label for m in at.metric]


# ------------------------------------------------------------------------------------------------- Activations

def test_activations_page_layers_modes_and_images(lab_env):
    at = open_page("activations")
    assert at.selectbox(key="inspect_run").value == lab_env.run.id  # the newest run is the default
    assert at.multiselect(key="act_layers").value == ["stem", "layer3"]
    metrics = {m.label: m.value for m in at.metric}
    assert "Output 16 × 32 × 32" in text(at.caption) and "Output 64 × 8 × 8" in text(at.caption)
    assert metrics["Receptive field"].endswith("px")
    assert len(at.get("image")) >= 3  # the input and one grid per layer

    at.multiselect(key="act_layers").set_value(["layer2.0.conv1"]).run()
    ok(at)
    assert [m.value for m in at.metric if m.label in ("Channels", "Map size")] == ["32", "16×16"]

    at.radio(key="act_mode").set_value("All channels").run()
    at.multiselect(key="act_layers").set_value(["layer3"]).run()
    at.number_input(key="act_page_layer3").set_value(2).run()
    ok(at)
    assert "Channels 32–63 of 64" in text(at.caption)

    at.radio(key="act_img_source").set_value("Random mistake").run()
    ok(at)
    at.button(key="act_img_another").click().run()
    ok(at)
    assert "Predicted" in text(at.markdown)


def test_activations_page_channel_examples(lab_env):
    from resnet_lab import channels as C

    at = open_page("activations")
    assert "In `resnet20` the stages' maps go 32×32 → 16×16 → 8×8 positions while the channels go 16 → 32 → 64." \
        in text(at.caption)
    assert at.selectbox(key="chex_layer").value == "layer3"
    assert "Not computed yet for `layer3`" in text(at.caption)
    n = len(lab_env.pred["labels"])
    at.button(key="chex_start").click().run()
    ok(at)
    deadline = time.monotonic() + 240
    while C.cached(lab_env.run, "layer3", n) is None:  # the job runs in the background; the page polls it
        assert time.monotonic() < deadline, "the channel-examples job did not finish"
        time.sleep(0.5)
    at.run()
    ok(at)
    rows = [m.value for m in at.markdown if m.value.startswith("**Channel ")]
    assert len(rows) == 4 and "strongest activation" in rows[0]
    assert "each over its 9 most exciting test images of 100" in text(at.caption)
    at.radio(key="chex_order").set_value("by number").run()
    at.number_input(key="chex_page").set_value(2).run()
    ok(at)
    assert [m.value.split(" · ")[0] for m in at.markdown if m.value.startswith("**Channel ")] == \
        ["**Channel 4**", "**Channel 5**", "**Channel 6**", "**Channel 7**"]


def test_activations_page_upload_good_and_bad(lab_env):
    at = open_page("activations")
    at.radio(key="act_img_source").set_value("Upload").run()
    ok(at)
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 4), dtype=np.uint8), "RGBA")
    at.file_uploader(key="act_img_upload").set_value(("cat.png", png(rgba), "image/png")).run()
    ok(at)
    assert "Prepared for the network" in text(at.caption) and "32×32" in text(at.caption)
    assert "Predicted" in text(at.markdown)
    at.file_uploader(key="act_img_upload").set_value(("notes.png", b"%PDF-1.4 not an image", "image/png")).run()
    ok(at)
    assert "not a PNG, JPEG or WebP" in text(at.error)


def test_activations_and_gradcam_on_a_model_with_inplace_relus(lab_env):
    at = open_page("activations", lab_env.inplace.id)
    assert "Output 64 × 32 × 32" in text(at.caption) and "Output 512 × 4 × 4" in text(at.caption)
    at.switch_page("../pages/gradcam.py").run()  # the run chosen on one page stays chosen on the others
    ok(at)
    assert at.selectbox(key="inspect_run").value == lab_env.inplace.id
    assert at.selectbox(key="cam_layer").value == "layer3"  # the sum the classifier sees, not the branch
    assert "map of 4×4 cells" in text(at.markdown)
    assert len([c for c in at.caption if "cells" in c.value]) == 4  # the sweep: custom_resnet's four stages (sums)
    assert "The sum or the branch?" in text(at.header)
    md = text(at.markdown)
    assert "**sum · `layer3`**" in md and "**branch only · `layer3.res`**" in md
    assert "Spearman rank correlation of the two maps" in text(at.caption)


# --------------------------------------------------------------------------------------------------- Grad-CAM

def test_gradcam_page_classes_layers_and_signed_maps(lab_env):
    at = settle(open_page("gradcam"))  # the five methods' maps come from a worker
    classes = lab_env.run.config["classes"]
    assert at.selectbox(key="cam_layer").value == "layer3"  # the last stage of resnet20 (8x8)
    md = text(at.markdown)
    assert "Predicted class: **" in md and "True class: **" in md and "map of 8×8 cells" in md
    sweep = [c.value for c in at.caption if "cells" in c.value]
    assert [s.split("`")[1] for s in sweep] == ["stem", "layer1", "layer2", "layer3"]
    assert "32×32 cells" in sweep[0] and "8×8 cells" in sweep[-1]
    # five methods for the predicted and the true class (one row when they are the same class)
    from resnet_lab.attributions import METHODS

    timed = [c.value for c in at.caption if c.value.split(" · ")[0] in METHODS]
    assert len(timed) in (len(METHODS), 2 * len(METHODS))
    assert "All maps together took" in text(at.caption)
    assert "The sum or the branch?" in text(at.header)  # resnet20's layer3 ends with a block's sum
    at.multiselect(key="cam_methods").set_value(["Grad-CAM", "Saliency"]).run()
    at.toggle(key="cam_sanity").set_value(True)
    settle(at)
    ok(at)
    steps = [c.value for c in at.caption if " · ρ " in c.value]
    assert len(steps) == 2 * 6 and steps[0].startswith("trained · ρ 1.00")  # 2 methods × (trained + 5 steps)
    _assert_verdict_follows_the_numbers(at, ["Grad-CAM", "Saliency"], steps)
    at.toggle(key="cam_sanity").set_value(False).run()

    at.selectbox(key="cam_class").set_value(classes[3]).run()
    ok(at)
    assert f"Chosen class: **{classes[3]}**" in text(at.markdown)
    at.toggle(key="cam_relu").set_value(False).run()
    ok(at)
    assert "red = for the class, blue = against it" in text(at.caption)
    at.selectbox(key="cam_layer").set_value("layer1.0.conv1").run()
    at.slider(key="cam_alpha").set_value(0.8).run()
    at.radio(key="cam_upsample").set_value("blocks").run()
    ok(at)
    assert "map of 32×32 cells" in text(at.markdown)

    at.radio(key="cam_img_source").set_value("Upload").run()
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8), "L")
    at.file_uploader(key="cam_img_upload").set_value(("gray.png", png(gray), "image/png")).run()
    ok(at)
    assert "Runner-up class: **" in text(at.markdown)


def _assert_verdict_follows_the_numbers(at, methods, captions):
    """The page's sanity text puts each method where its own shown rho after the first step and at the end say
    (attributions.FAIL_RHO / SANITY_RHO), whatever the numbers are."""
    from resnet_lab.attributions import FAIL_RHO, SANITY_RHO

    md = text(at.markdown)
    per = len(captions) // len(methods)
    for i, m in enumerate(methods):
        rhos = [c.split("ρ ")[1] for c in captions[i * per:(i + 1) * per]]
        if "–" in (rhos[1], rhos[-1]):
            assert f"{m}: a map became constant" in md or "a map became constant" in md
            continue
        first, final = float(rhos[1]), float(rhos[-1])
        heading = ("**Fails the check:**" if first >= FAIL_RHO or final >= SANITY_RHO
                   else "**Partly survives:**" if first >= SANITY_RHO else "**Passes:**")
        block = next((b for b in md.splitlines() if f"**{m}** (" in b and b.startswith(("**Fails", "**Partly", "**Passes"))), md)
        assert block.startswith(heading) and f"**{m}** ({first:.2f})" in block, (m, first, final, block[-3000:])


def test_gradcam_maps_and_sanity_check_are_computed_once_in_workers_never_in_the_page(lab_env, monkeypatch):
    """The five methods and the sanity check take seconds to minutes on a busy CPU: the page submits them as
    quick-lane jobs, shows their progress, and every session asking for the same image reads the one result."""
    import lab_ui

    from resnet_lab import attributions as A

    def in_the_script_thread(*args, **kwargs):
        raise AssertionError("computed in the page's script thread")

    monkeypatch.setattr(A, "attribute", in_the_script_thread)
    monkeypatch.setattr(A, "sanity_check", in_the_script_thread)
    at = open_page("gradcam")
    ok(at)
    jobs = [j for j in lab_ui.job_registry().all() if j.kind == "attributions"]
    assert len(jobs) == 1 and jobs[0].device == "quick" and jobs[0].threads in (None, 1)
    settle(at)
    ok(at)
    assert "All maps together took" in text(at.caption)
    at.toggle(key="cam_sanity").set_value(True)
    settle(at)
    ok(at)
    assert "after re-initialising" in text(at.markdown) or "after `" in text(at.markdown)
    # a second student on the same image and layer: the stored results, no new job
    other = open_page("gradcam")
    other.toggle(key="cam_sanity").set_value(True).run()
    ok(other)
    assert "All maps together took" in text(other.caption)
    assert text(other.markdown).count("Spearman rank correlation") >= 1 and (
        "**Passes:**" in text(other.markdown) or "**Fails the check:**" in text(other.markdown)
        or "**Partly survives:**" in text(other.markdown))
    kinds = [j.kind for j in lab_ui.job_registry().all()]
    assert kinds.count("attributions") == 1 and kinds.count("sanity") == 1


def test_gradcam_page_shows_the_numbers_explain_computes(lab_env, monkeypatch, capsys):
    """Both sanity checks and ROAD (one image and a class-balanced sample) on the page equal `explain --json` on the
    same run, image, layer and methods: one library function behind both."""
    import json

    from resnet_lab.cli import main

    monkeypatch.setenv("RESNET_LAB_REFERENCE", str(Path(__file__).resolve().parent.parent / "assets" / "reference"))
    methods = ["Grad-CAM", "Guided Backprop"]
    at = settle(open_page("gradcam", lab_env.run.id))
    at.multiselect(key="cam_methods").set_value(methods).run()
    at.toggle(key="cam_sanity").set_value(True)
    at.toggle(key="cam_data").set_value(True)
    at.number_input(key="cam_road_sample").set_value(10)
    at.toggle(key="cam_road").set_value(True)
    settle(at)
    ok(at)
    index = int(np.sort(lab_env.pred["indices"])[0])  # "any class", image number 0

    def cli(*argv) -> dict:
        assert main(["explain", "--run", lab_env.run.id, "--methods", "grad-cam", "guided-backprop", "--json",
                     *argv]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    one = cli("--image", str(index), "--sanity", "--data-randomisation", "--faithfulness")
    sample = cli("--sample", "10", "--faithfulness")
    captions = [c.value for c in at.caption]
    for m in methods:
        rhos = one["sanity"]["per_image"][m][0]
        for step, r in zip(one["sanity"]["steps"], rhos):
            assert f"{step} · ρ {r:.2f}" in captions if r is not None else f"{step} · ρ –" in captions
        assert f"{m} · ρ {one['data_randomisation']['per_image'][m][0]:.2f}" in captions
    _assert_verdict_follows_the_numbers(at, methods, [c for c in captions if " · ρ " in c and c.split(" · ")[0]
                                                      in one["sanity"]["steps"]])
    tables = [t.value for t in at.dataframe if "ROAD (higher better)" in t.value.columns]
    assert len(tables) == 2  # this image, then the sample (in the page's order)
    for table, result in zip(tables, (one, sample)):
        shown = table.set_index("method")
        assert list(shown.index) == result["faithfulness"]["ranking"]
        for m, c in result["faithfulness"]["mean"].items():
            assert shown.loc[m, "ROAD (higher better)"] == pytest.approx(c["road"], abs=1e-9)
            assert shown.loc[m, "MoRF (lower better)"] == pytest.approx(c["morf_area"], abs=1e-9)
    md = text(at.markdown)
    assert one["faithfulness"]["text"] in md and sample["faithfulness"]["text"] in md
    assert "10 test images (mean)" in sample["faithfulness"]["text"]


def test_the_data_test_is_explained_where_no_shuffled_network_fits(lab_env):
    at = settle(open_page("gradcam", lab_env.inplace.id))  # a custom_resnet: the shipped network is a ResNet-20
    ok(at)
    assert "needs the shipped network trained on shuffled labels" in text(at.info) or \
        "needs a custom_resnet trained on shuffled labels" in text(at.info)
    assert not [t for t in at.toggle if t.key == "cam_data"]


def test_a_failed_computation_says_why_and_can_be_tried_again(lab_env, monkeypatch):
    import lab_ui

    at = open_page("gradcam")
    job = next(j for j in lab_ui.job_registry().all() if j.kind == "attributions")
    job.wait(120)
    job.status, job.error = "failed", "the worker ran out of memory"  # what the pump records for a killed worker
    shared = lab_ui.shared_results()
    with shared._lock:
        shared._results.clear()
    at.run()
    ok(at)
    assert "failed:** the worker ran out of memory" in text(at.error)
    at.button(key="cam_attr_retry").click().run()
    settle(at)
    ok(at)
    assert "All maps together took" in text(at.caption)
    assert [j.kind for j in lab_ui.job_registry().all()].count("attributions") == 2


# ----------------------------------------------------------------------------------------------- Misclassified

def _open_buttons(at) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith("open_")]


def test_misclassified_headline_filters_gallery_and_detail(lab_env):
    pred, classes = lab_env.pred, lab_env.run.config["classes"]
    probs, labels, indices = pred["probs"], pred["labels"], pred["indices"]
    preds = probs.argmax(1)
    wrong = preds != labels
    at = open_page("misclassified")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1 accuracy"] == f"{100 * (preds == labels).mean():.1f}%"
    top3 = (np.argsort(-probs, 1, kind="stable")[:, :3] == labels[:, None]).any(1).mean()
    assert metrics["Top-3 accuracy"] == f"{100 * top3:.1f}%"
    assert metrics[f"Mistakes (of {len(labels):,})"] == f"{wrong.sum():,}"  # short value: never cut off
    assert len(_open_buttons(at)) == min(24, int(wrong.sum()))

    # the most frequent confusion, chosen with the keyed boxes (a click on the matrix sets the same boxes)
    pairs = {}
    for t, p in zip(labels[wrong], preds[wrong]):
        pairs[(t, p)] = pairs.get((t, p), 0) + 1
    (t, p), count = max(pairs.items(), key=lambda kv: kv[1])
    at.selectbox(key="filter_true").set_value(classes[t]).run()
    at.selectbox(key="filter_pred").set_value(classes[p]).run()
    ok(at)
    shown = _open_buttons(at)
    assert len(shown) == min(24, count)
    expected = {f"open_{i}" for i in indices[(labels == t) & (preds == p)]}
    assert set(shown) <= expected

    at.selectbox(key="filter_true").set_value("any").run()
    at.selectbox(key="filter_pred").set_value("any").run()
    at.toggle(key="only_wrong").set_value(False).run()
    at.selectbox(key="sort").set_value("index").run()
    at.selectbox(key="page_size").set_value(12).run()
    ok(at)
    assert _open_buttons(at) == [f"open_{i}" for i in sorted(indices)[:12]]
    at.number_input(key="gallery_page").set_value(2).run()
    assert _open_buttons(at) == [f"open_{i}" for i in sorted(indices)[12:24]]

    first = _open_buttons(at)[0]
    at.button(key=first).click().run()
    ok(at)
    assert f"Test image #{first[5:]}" in text(at.subheader)
    assert "Grad-CAM" in text(at.markdown)
    # two probabilities of one image on one screen: each says where it comes from (issue 20 item 6)
    assert "Stored with the run: its final evaluation, one forward pass" in text(at.caption)
    assert "on this image alone, computed now" in text(at.caption)
    at.button(key="close_detail").click().run()
    assert not at.subheader or "Test image #" not in text(at.subheader)

    # open an image, then carry it to the Grad-CAM page
    last = _open_buttons(at)[-1]
    at.button(key=last).click().run()
    at.button(key="to_gradcam").click().run()
    ok(at)
    assert at.radio(key="cam_img_source").value == "Test image"
    position = at.number_input(key="cam_img_number").value
    assert sorted(indices)[position] == int(last[5:])
    assert at.selectbox(key="inspect_run").value == lab_env.run.id


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """10,000 stored predictions over a 10,000-image class-folder test split (no weights: the workbench needs none)."""
    from resnet_lab.data import make_class_folder_dataset
    from resnet_lab.runs import RunStore

    base = tmp_path_factory.mktemp("inspect-10k")
    root = make_class_folder_dataset(base / "data", 1, 1000, size=32, fmt="png", seed=3)
    data = load_with_own_cache(root, base / "cache")
    rng = np.random.default_rng(0)
    labels = data.test_y
    logits = rng.normal(size=(len(labels), 10)) + 2.5 * np.eye(10)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    store = RunStore(base / "runs")
    run = store.create({"model": "resnet20", "classes": data.classes, "mean": list(data.mean),
                        "std": list(data.std), "data": str(root)}, prefix="synthetic-10k")
    store.save_predictions(run, probs, labels, data.test_index)
    store.set_status(run, "done")
    return SimpleNamespace(root=root, base=base, run=run)


def test_misclassified_interactions_with_10000_predictions(big_run, monkeypatch):
    """Every workbench control works on 10,000 predictions (timing: benchmarks/bench_misclassified.py)."""
    monkeypatch.setenv("RESNET_LAB_DATA", str(big_run.root))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(big_run.base / "cache"))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(big_run.base / "runs"))
    at = open_page("misclassified")  # first view: reads and caches predictions and images
    assert at.metric[3].label == "Mistakes (of 10,000)" and at.metric[3].value.replace(",", "").isdigit()
    steps = [
        lambda: at.selectbox(key="filter_true").set_value("cat"),
        lambda: at.selectbox(key="sort").set_value("confidence"),
        lambda: at.selectbox(key="page_size").set_value(48),
        lambda: at.number_input(key="gallery_page").set_value(3),
        lambda: at.toggle(key="only_wrong").set_value(False),
        lambda: at.selectbox(key="filter_pred").set_value("dog"),
        lambda: at.radio(key="cm_mode").set_value("% of each true class"),
        lambda: at.button(key=_open_buttons(at)[0]).click(),
    ]
    for step in steps:
        step()
        at.run()
        ok(at)
    assert "Test image #" in text(at.subheader)


# ----------------------------------------------------------------------------------------------------- browser

@pytest.fixture
def served_run(app_server, lab):
    """The module's trained run, copied into the app server's runs folder (same tiny data) for the browser tests;
    removed afterwards so other pages' tests see the folder as they expect."""
    from resnet_lab.runs import RunStore

    assert Path(app_server.data_dir) == Path(lab.data_dir)
    target = Path(app_server.runs_dir) / lab.run.id
    shutil.copytree(lab.run.path, target)
    yield RunStore(app_server.runs_dir).get(lab.run.id)
    shutil.rmtree(target, ignore_errors=True)


@pytest.mark.browser
def test_browser_gallery_matrix_click_and_gradcam(served_run, goto_page, screenshot):
    page = goto_page("misclassified")
    assert_no_exception(page)
    assert wait_for_count(page, "[data-testid='stImage'] img", 6) >= 6
    screenshot("misclassified-gallery")

    # a click on a confusion-matrix cell filters the gallery: click the busiest off-diagonal cell's marker
    pred = served_run.predictions()
    classes = served_run.config["classes"]
    n = len(classes)
    cm = np.zeros((n, n), int)
    np.add.at(cm, (pred["labels"], pred["probs"].argmax(1)), 1)
    np.fill_diagonal(cm, 0)
    t, p = np.unravel_index(int(cm.argmax()), cm.shape)
    wait_for_count(page, "[data-testid='stPlotlyChart'] .scatterlayer .point", n * n)
    chart = page.locator("[data-testid='stPlotlyChart']").nth(1)
    chart.scroll_into_view_if_needed()
    marker = chart.locator(".scatterlayer .point").nth(int(t) * n + int(p))
    box = marker.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_for_script(page)
    assert_no_exception(page)
    assert page.get_by_role("combobox", name="True class").input_value() == classes[t]
    assert page.get_by_role("combobox", name="Predicted class").input_value() == classes[p]
    assert f"{cm[t, p]} image(s) match" in page.inner_text("[data-testid='stMain']").replace(",", "")

    # "Open" under the first thumbnail (the selectboxes' arrows are also buttons named "Open")
    page.locator("[data-testid='stButton'] button", has_text="Open").first.click()
    wait_for_script(page)
    assert_no_exception(page)
    assert "Test image #" in page.inner_text("[data-testid='stMain']")
    screenshot("misclassified-open")


@pytest.mark.browser
def test_browser_gradcam_and_activations(served_run, goto_page, screenshot):
    page = goto_page("gradcam")
    assert_no_exception(page)
    assert wait_for_count(page, "[data-testid='stImage'] img", 7) >= 7  # input, 2 overlays, 4 sweep maps
    screenshot("gradcam-overlay")
    page = goto_page("activations")
    assert_no_exception(page)
    screenshot("activations")


@pytest.mark.parametrize("page", PAGES)
def test_on_a_class_server_the_look_inside_pages_read_the_locked_source(page, lab, tmp_path, monkeypatch):
    """Issue 20 item 2: the pages decoded the path a run recorded (it existed on the server by chance), making a
    second decode cache and printing that path. On a class server they read the locked source only; the run's
    images are matched by content (labels), not by path."""
    locked = tmp_path / "class-data"
    shutil.copytree(lab.data_dir, locked)  # the same images at the path the teacher locked
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNET_LAB_LOCK_DATA", str(locked))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(cache))
    monkeypatch.setenv("RESNET_LAB_RUNS", str(lab.runs))
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    at = open_page(page, lab.run.id)
    assert not at.error, text(at.error)
    shown = "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind))
    assert str(lab.data_dir) not in shown and str(locked) not in shown
    decoded = sorted(p.name for p in cache.rglob("*.npz"))
    assert len(decoded) == 1, decoded  # one decode: the locked source's, none of the recorded path
