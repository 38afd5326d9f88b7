"""Classification metrics, defined once: top-k accuracy, per-class accuracy, the confusion matrix and its
most-confused pairs (fastai's ``Interpretation`` list), and the bundle the trainer stores with every run.

The trainer (``training``), the runs store's recovery (``runs``), the inspection helpers and pages (``inspect``,
the Misclassified page) and the CLI (``errors``) all read these; plain numpy, vectorised (10,000 predictions in
milliseconds). Rows of a confusion matrix are true classes, columns predicted ones. A prediction is the first
class of a stable descending sort of the probabilities (``argmax``: ties go to the lower class id).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
    if len(labels) and (min(labels.min(), preds.min()) < 0 or max(labels.max(), preds.max()) >= n):
        raise ValueError(f"class ids must lie in 0..{n - 1}")
    return np.bincount(labels * n + preds, minlength=n * n).reshape(n, n)


def normalize_confusion(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the fraction of each true class predicted as each class); empty rows 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall per true class (diagonal / row total); NaN for a class with no test images."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(1)
    return np.divide(np.diag(confusion), totals, out=np.full(len(totals), np.nan), where=totals > 0)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 3, 5)) -> dict[int, float]:
    """Fraction of images whose true class is among the k most probable, for each k."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    out = {}
    if not len(labels):
        return {int(k): 0.0 for k in ks}
    p_true = probs[np.arange(len(labels)), labels][:, None]
    # rank of the true class in a stable descending sort: classes scoring higher, plus equal-scoring classes
    # with a lower id (saturated softmaxes tie at 0.0; the stable argsort's order). A NaN probability of the true
    # class is never a hit (a comparison with NaN is False, which would otherwise give it rank 0).
    lower_id = np.arange(probs.shape[1])[None, :] < labels[:, None]
    rank = ((probs > p_true) | ((probs == p_true) & lower_id)).sum(1)
    rank = np.where(np.isfinite(p_true[:, 0]), rank, probs.shape[1])
    for k in ks:
        out[int(k)] = float((rank < k).mean())
    return out


def most_confused(confusion: np.ndarray, classes: Sequence[str], min_count: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (true, predicted, count) with count >= min_count, most frequent first (fastai's list)."""
    confusion = np.asarray(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off >= max(1, int(min_count)))
    counts = off[rows, cols]
    order = np.lexsort((cols, rows, -counts))  # by count descending, then true, then predicted
    return [(classes[rows[i]], classes[cols[i]], int(counts[i])) for i in order]


def predicted(probs: np.ndarray) -> np.ndarray:
    """The predicted class of each row: the first of a stable descending sort (ties: the lower class id)."""
    return np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, 0]


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """What a run stores: top-1/3/5 accuracy, per-class accuracy (None for a class without test images), the
    confusion matrix (rows true, columns predicted), the test loss (mean -log p_true) and the number of images."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    top = topk_accuracy(probs, labels, (1, 3, 5))
    confusion = confusion_matrix(labels, predicted(probs) if len(labels) else labels, num_classes)
    out = {f"top{k}": top[k] for k in (1, 3, 5)}
    out["per_class_acc"] = [None if np.isnan(v) else float(v) for v in per_class_accuracy(confusion)]
    out["confusion"] = confusion.tolist()
    eps = 1e-12
    out["test_loss"] = float(-np.log(probs[np.arange(len(labels)), labels] + eps).mean()) if len(labels) else 0.0
    out["n_test"] = int(len(labels))
    return out
