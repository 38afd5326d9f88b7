"""resnet_lab.metrics: the one home of top-k accuracy, per-class accuracy, the confusion matrix and the
most-confused pairs. Checked against direct, differently written computations (a stable argsort for top-k, counting
with np.add.at for the confusion matrix), with ties and NaN, and for being defined nowhere else."""

from __future__ import annotations

import ast

import numpy as np

from conftest import ROOT
from resnet_lab import metrics as M


def _direct(probs, labels, c):
    order = np.argsort(-probs, axis=1, kind="stable")
    top = {k: float((order[:, :min(k, c)] == labels[:, None]).any(1).mean()) for k in (1, 3, 5)}
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, order[:, 0]), 1)
    return top, confusion


def test_classification_metrics_match_a_direct_computation_with_ties():
    rng = np.random.default_rng(7)
    for n, c in ((2000, 10), (40, 3), (15, 100)):
        probs = rng.random((n, c)).astype(np.float32)
        probs /= probs.sum(1, keepdims=True)
        probs[: n // 3] = np.round(probs[: n // 3], 1)  # saturated rows tie, as softmaxes do at 0.0
        labels = rng.integers(0, c, n)
        top, confusion = _direct(probs, labels, c)
        out = M.classification_metrics(probs, labels, c)
        assert {k: out[f"top{k}"] for k in (1, 3, 5)} == top
        assert out["confusion"] == confusion.tolist()
        totals = confusion.sum(1)
        assert out["per_class_acc"] == [float(confusion[i, i] / totals[i]) if totals[i] else None for i in range(c)]
        assert out["n_test"] == n and np.isfinite(out["test_loss"])


def test_a_nan_probability_is_never_a_hit_and_empty_input_is_zero():
    probs = np.array([[np.nan, 0.5, 0.5], [0.2, 0.7, 0.1]])
    assert M.topk_accuracy(probs, np.array([0, 1]), (1, 3)) == {1: 0.5, 3: 0.5}
    empty = M.classification_metrics(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), 4)
    assert empty["top1"] == 0.0 and empty["confusion"] == np.zeros((4, 4), int).tolist()
    assert empty["per_class_acc"] == [None] * 4


def test_each_metric_is_defined_once_in_the_library():
    names = {"confusion_matrix", "per_class_accuracy", "topk_accuracy", "most_confused", "classification_metrics",
             "normalize_confusion"}
    where = {}
    for path in (ROOT / "resnet_lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                where.setdefault(node.name, []).append(path.relative_to(ROOT).as_posix())
    assert where == {name: ["resnet_lab/metrics.py"] for name in names}
