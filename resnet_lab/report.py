"""The report a student hands in for the assignment: ``DIR/README.md`` and its PNGs, written from a finished run.

    write_report(run, out_dir, data=None, lr_test=None) -> Path of README.md

Sections: the run and the command that reproduces it, the assignment check, the model summary (torchinfo), the
receptive field per layer, the LR range test with the picked LRs (when the run's sweep is given), the one-cycle
LR/momentum schedule, the per-epoch log, loss and accuracy curves, the confusion matrix, the misclassified test
images with their true and predicted labels, and Grad-CAM on some of them. Every number is read from the run (its
config, history, metrics and stored predictions) or recomputed from its network; nothing is typed in.

Figures are drawn with matplotlib (imported here only: the training path never needs it), headless (Agg).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from resnet_lab import assignment
from resnet_lab import inspect as I
from resnet_lab import models
from resnet_lab.receptive_field import receptive_fields, RFError
from resnet_lab.train.config import steps_per_epoch, TrainConfig
from resnet_lab.train.schedule import one_cycle

LR_TEST_FILE = "lr_test.json"  # the range test a run's LRs came from (written when the LR Finder handed them over)
N_WRONG = 20
N_CAM = 10


class ReportError(Exception):
    """The run cannot give a report (no predictions, no checkpoint, its data missing), said plainly."""


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")

    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _curves(history: list[dict], out: Path) -> str:
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [h.get("train_loss") for h in history], "o-", label="train")
    tested = [h for h in history if "test_loss" in h]
    a.plot([h["epoch"] for h in tested], [h["test_loss"] for h in tested], "o-", label="test")
    a.set(xlabel="epoch", ylabel="loss (cross-entropy)", title="Loss")
    b.plot(epochs, [100 * h.get("train_acc", 0) for h in history], "o-", label="train")
    b.plot([h["epoch"] for h in tested], [100 * h["test_acc"] for h in tested], "o-", label="test")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out / "curves.png")


def _schedule(config: TrainConfig, n_train: int, out: Path) -> str:
    plt = _plt()
    steps = steps_per_epoch(n_train, config.batch_size)
    lrs, moms = one_cycle(config, steps)
    x = np.arange(1, len(lrs) + 1) / steps
    fig, a = plt.subplots(figsize=(8, 3.2))
    a.plot(x, lrs, color="tab:blue")
    a.set(xlabel="epoch", ylabel="learning rate", title=f"One-cycle: LR {config.lr_min:g} → {config.lr_max:g} at "
          f"epoch {config.peak_epoch:g} → back down")
    b = a.twinx()
    b.plot(x, moms, color="tab:orange")
    b.set_ylabel("momentum / β₁", color="tab:orange")
    a.grid(alpha=0.3)
    return _save(fig, out / "schedule.png")


def _lr_test(curve: dict, config: TrainConfig, out: Path) -> str:
    plt = _plt()
    fig, a = plt.subplots(figsize=(8, 3.4))
    a.plot(curve["lrs"], curve["losses"], label="smoothed loss")
    a.set_xscale("log")
    for lr, name, colour in ((config.lr_max, "LR max", "tab:red"), (config.lr_min, "LR min", "tab:green")):
        a.axvline(lr, color=colour, linestyle="--", label=f"{name} {lr:.3g}")
    a.set(xlabel="learning rate (log scale)", ylabel="loss", title="LR range test")
    a.grid(alpha=0.3)
    a.legend()
    return _save(fig, out / "lr_test.png")


def _confusion(confusion: np.ndarray, classes: list[str], out: Path) -> str:
    plt = _plt()
    fig, a = plt.subplots(figsize=(6.5, 5.5))
    a.imshow(confusion, cmap="Blues")
    a.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
          title="Confusion matrix (test images)")
    a.set_xticklabels(classes, rotation=45, ha="right")
    a.set_yticklabels(classes)
    top = confusion.max() or 1
    for (i, j), v in np.ndenumerate(confusion):
        a.text(j, i, int(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    return _save(fig, out / "confusion.png")


def _grid(pictures: list[np.ndarray], titles: list[str], path: Path, cols: int = 5) -> str:
    plt = _plt()
    rows = max(1, -(-len(pictures) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, picture, title in zip(axes.flat, pictures, titles):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def _rf_rows(model) -> tuple[list[list], str]:
    try:
        table = receptive_fields(model, 32)
    except RFError as exc:
        return [], f"The receptive fields cannot be computed for this network: {exc}"
    rows = [[r.name, r.op, "×".join(map(str, r.kernel)) if r.kernel else "-",
             f"{r.out_size[0]}×{r.out_size[1]}" if r.out_size else "-", r.channels or "-",
             f"{r.rf_max[0]:g}", f"{r.jump[0]:g}"] for r in table.layers if r.geometric and r.op != "input"]
    last = table.final
    return rows, (f"The last spatial layer, `{last.name}`, sees {last.rf_max[0]:g} px of the 32-px image over its "
                  f"longest path and {last.rf_min[0]:g} px over its shortest.")


def write_report(run, out_dir: str | Path, data=None, lr_test: dict | None = None) -> Path:
    """Write ``out_dir/README.md`` and its figures for a finished run; returns the README's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        pred = I.enrich(run.predictions())
        model = run.load_model("cpu")
    except Exception as exc:
        raise ReportError(f"run {run.id} cannot give a report: {exc}") from exc
    classes = list(run.classes or [str(i) for i in range(pred["probs"].shape[1])])
    config = TrainConfig.from_dict({k: v for k, v in run.config.items() if k in TrainConfig.__dataclass_fields__})
    metrics, history = run.metrics or {}, run.history or []
    check = assignment.check_run(run)
    if lr_test is None and (run.path / LR_TEST_FILE).is_file():
        try:
            lr_test = json.loads((run.path / LR_TEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lr_test = None  # a damaged link: the report goes without the curve
    if not (isinstance(lr_test, dict) and isinstance(lr_test.get("lrs"), list)
            and isinstance(lr_test.get("losses"), list)):
        lr_test = None
    s = I.summary(pred, classes)

    name = str(run.config.get("model"))
    if models.is_model_file(name):  # path/to/my_net.py:Net -> my_net.py:Net
        name = f"{Path(name.rpartition(':')[0]).name}:{name.rpartition(':')[2]}"
    parts = [f"# {name} — assignment report", "",
             f"Run `{run.id}` ({run.status}): **{100 * metrics.get('top1', 0):.2f}% top-1** on "
             f"{metrics.get('n_test', len(pred['labels'])):,} test images (top-3 {100 * s['top3']:.2f}%, top-5 "
             f"{100 * s['top5']:.2f}%), {config.epochs} epoch{'s' if config.epochs != 1 else ''} on {run.config.get('n_train', '?'):,} training images, "
             f"{run.config.get('device_name', '?')}. Data: `{run.config.get('data_source')}`.", "",
             "## The assignment, checked", "", *[f"- {i.line}" for i in check], "",
             f"{sum(i.status == 'pass' for i in check)} passed, {sum(i.status == 'fail' for i in check)} failed, "
             f"{sum(i.status == 'unknown' for i in check)} unknown (`python -m resnet_lab check --run {run.id}`).", ""]
    try:
        text = models.summary(model).text
        parts += ["## Model summary (torchinfo)", "", "```", text, "```", ""]
    except Exception as exc:  # a network torchinfo cannot walk: the rest of the report still stands
        parts += ["## Model summary", "", f"torchinfo could not summarise this network: {exc}", ""]
    rf_rows, rf_note = _rf_rows(model)
    parts += ["## Receptive field per layer", "", rf_note, ""]
    if rf_rows:
        parts += [_table(["layer", "op", "kernel", "output", "channels", "RF (px)", "jump (px)"], rf_rows), ""]
    if lr_test:
        parts += ["## LR range test", "", f"![LR range test]({_lr_test(lr_test, config, out)})", "",
                  f"The run trained from LR {config.lr_min:g} up to {config.lr_max:g}.", ""]
    parts += ["## One-cycle schedule", "", f"![schedule]({_schedule(config, int(run.config.get('n_train') or 1), out)})",
              "", f"LR from {config.lr_min:g} to {config.lr_max:g} at epoch {config.peak_epoch:g}, "
              f"{'then annihilated' if config.annihilation else 'then back to LR min (no annihilation)'}; "
              f"{config.optimizer}, batch {config.batch_size}.", ""]
    if history:
        parts += ["## Training log", "", _table(
            ["epoch", "train loss", "train acc", "test loss", "test acc", "LR", "seconds"],
            [[h.get("epoch"), h.get("train_loss", "-"), f"{100 * h['train_acc']:.2f}%" if "train_acc" in h else "-",
              h.get("test_loss", "-"), f"{100 * h['test_acc']:.2f}%" if "test_acc" in h else "-", h.get("lr", "-"),
              h.get("seconds", "-")] for h in history]), "", f"![loss and accuracy curves]({_curves(history, out)})",
                  ""]
    parts += ["## Confusion matrix", "", f"![confusion matrix]({_confusion(np.asarray(s['confusion']), classes, out)})",
              "", "Most confused (true → predicted): " + ", ".join(
                  f"{t} → {p} ({n})" for t, p, n in s["most_confused"][:5]) + ".", ""]
    parts += _mistakes(run, model, pred, classes, data, out)
    path = out / "README.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"run": run.id, "check": assignment.summary(check)}, indent=1))
    return path


def _mistakes(run, model, pred: dict, classes: list[str], data, out: Path) -> list[str]:
    """The misclassified images (the most confidently wrong first) and Grad-CAM on some of them."""
    wrong = I.filter_predictions(pred, only_wrong=True, sort="loss")[:N_WRONG]
    if not len(wrong):
        return ["## Misclassified images", "", "None: every test image was classified correctly.", ""]
    try:
        images = I.run_images(pred, data if data is not None else I.run_dataset(run))[wrong]
    except Exception as exc:  # the run's data is not here: say so, the rest of the report stands
        return ["## Misclassified images", "", f"The run's test images are not available here ({exc}).", ""]
    labels, preds = pred["labels"][wrong], pred["preds"][wrong]
    titles = [f"true {classes[t]}\npred {classes[p]} ({100 * pred['probs'][i, p]:.0f}%)"
              for i, t, p in zip(wrong, labels, preds)]
    lines = ["## Misclassified images", "",
             f"The {len(wrong)} test images the network got most confidently wrong (highest loss first):", "",
             f"![misclassified]({_grid(list(images), titles, out / 'misclassified.png')})", ""]
    mean, std = run.config.get("mean"), run.config.get("std")
    spatial = I.stages(model)
    if not spatial or not mean:
        return lines + ["Grad-CAM needs a layer with a spatial map; this network has none.", ""]
    layer = spatial[-1]
    cams = [I.gradcam(model, img, layer, int(p), mean=mean, std=std) for img, p in zip(images[:N_CAM], preds[:N_CAM])]
    pictures = [I.overlay(img, cam.normalized, 0.5, size=128) for img, cam in zip(images[:N_CAM], cams)]
    return lines + [f"Grad-CAM at `{layer}` for the predicted class (red: where the evidence for it is):", "",
                    f"![Grad-CAM]({_grid(pictures, titles[:N_CAM], out / 'gradcam.png')})", ""]
