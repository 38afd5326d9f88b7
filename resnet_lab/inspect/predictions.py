"""The test images a run gets wrong: stored predictions enriched, filtered, sorted, summarised and written as CSV
(vectorised numpy, fast on 10,000 rows).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from resnet_lab.metrics import confusion_matrix, most_confused, per_class_accuracy, topk_accuracy

# --------------------------------------------------------------------------------------------------------------------
# Mistakes: confusion matrix, accuracies, filtering


def enrich(pred: dict) -> dict:
    """Add what the workbench sorts and filters by: ``preds``, ``confidence`` (max probability),
    ``p_true`` (probability of the true class), ``loss`` (-log p_true) and ``correct``."""
    probs = np.asarray(pred["probs"], dtype=np.float32)
    labels = np.asarray(pred["labels"], dtype=np.int64)
    out = dict(pred)
    out["preds"] = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    out["confidence"] = probs.max(1) if len(probs) else np.zeros(0, np.float32)
    out["p_true"] = probs[np.arange(len(labels)), labels] if len(labels) else np.zeros(0, np.float32)
    out["loss"] = -np.log(np.maximum(out["p_true"], 1e-12))
    out["correct"] = out["preds"] == labels
    return out


SORTS = ("loss", "confidence", "index")


def filter_predictions(pred: dict, true: int | None = None, predicted: int | None = None, only_wrong: bool = True,
                       sort: str = "loss") -> np.ndarray:
    """Rows of the prediction arrays that match, sorted: an int64 array of positions.

    ``sort="loss"``: the most wrong first (highest -log p_true); ``"confidence"``: most confident first;
    ``"index"``: by test-set index. ``pred`` is a ``run.predictions()`` dict (``enrich`` is applied if needed).
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    if "loss" not in pred:
        pred = enrich(pred)
    mask = np.ones(len(pred["labels"]), dtype=bool)
    if true is not None:
        mask &= pred["labels"] == int(true)
    if predicted is not None:
        mask &= pred["preds"] == int(predicted)
    if only_wrong:
        mask &= ~pred["correct"]
    rows = np.flatnonzero(mask)
    if sort == "loss":
        key = -pred["loss"][rows]
    elif sort == "confidence":
        key = -pred["confidence"][rows]
    else:
        key = np.asarray(pred["indices"])[rows]
    return rows[np.argsort(key, kind="stable")]


def summary(pred: dict, classes: Sequence[str], min_count: int = 1) -> dict:
    """Headline numbers of stored predictions: n, n_wrong, top-1/3/5, per-class accuracy, confusion, pairs."""
    if "loss" not in pred:
        pred = enrich(pred)
    n_classes = len(classes)
    confusion = confusion_matrix(pred["labels"], pred["preds"], n_classes)
    top = topk_accuracy(pred["probs"], pred["labels"], (1, 3, 5))
    return {"n": int(len(pred["labels"])), "n_wrong": int((~pred["correct"]).sum()),
            "top1": top[1], "top3": top[3], "top5": top[5],
            "per_class_acc": [None if np.isnan(v) else float(v) for v in per_class_accuracy(confusion)],
            "classes": list(classes), "confusion": confusion.tolist(),
            "most_confused": [list(t) for t in most_confused(confusion, classes, min_count)]}


def topk(probs: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The k most probable classes of one probability vector: [(class, probability), ...]."""
    probs = np.asarray(probs)
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(c), float(probs[c])) for c in order]


def predictions_csv(pred: dict, rows: np.ndarray, classes: Sequence[str]) -> str:
    """The chosen rows as CSV: test_index, true, predicted, confidence, p_true, loss, correct."""
    if "loss" not in pred:
        pred = enrich(pred)
    rows = np.asarray(rows, dtype=np.int64)
    names = np.asarray(list(classes), dtype=object)
    out = io.StringIO()
    out.write("test_index,true,predicted,confidence,p_true,loss,correct\n")
    for idx, t, p, conf, pt, loss, ok in zip(np.asarray(pred["indices"])[rows], names[pred["labels"][rows]],
                                             names[pred["preds"][rows]], pred["confidence"][rows],
                                             pred["p_true"][rows], pred["loss"][rows], pred["correct"][rows]):
        out.write(f"{int(idx)},{_csv_field(t)},{_csv_field(p)},{conf:.6f},{pt:.6f},{loss:.6f},{bool(ok)}\n")
    return out.getvalue()


def _csv_field(text: str) -> str:
    text = str(text)
    if any(ch in text for ch in ',"\n') or text[:1] in "=+-@":
        # quote, and defuse spreadsheet formulas in class names taken from folder names
        text = text if text[:1] not in "=+-@" else "'" + text
        return '"' + text.replace('"', '""') + '"'
    return text
