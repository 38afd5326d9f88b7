"""Depth degradation: plain vs residual networks of growing depth (He et al. 2015, section 4.2, Fig. 6 and 7).

Every net of a suite is an ordinary run of ``training.train`` (so it lands in the runs store), and all nets
share one recipe: SGD with the paper's momentum 0.9 and weight decay 1e-4, a one-cycle LR, crop + flip
augmentation, the same seed — hence the same data order and the same augmentation draws, because the
trainer feeds both from one seeded generator that never depends on the model. The only difference
between two nets is depth and whether the blocks add their input back.

On top of the paper's error curves, each net gets two per-layer pictures, measured on one fixed batch of
test images, at initialisation and after training:
- response std (Fig. 7): the output of every BN that directly follows a 3x3 conv, i.e. after BN and before
  the ReLU; the std over (images, positions) per channel, averaged over channels;
- gradient norm: ||dL/dW|| of each of those 3x3 convs for the cross-entropy of the same batch.

A suite writes one JSON result (``<runs root>/degradation/<suite id>.json``), rewritten after every net
so a stop or crash keeps what was finished. Nothing here prints; progress goes out as events.
"""

from __future__ import annotations

from resnet_lab.experiments.degradation.results import (
    ASSETS_DIR,
    effect,
    fig6_series,
    fig7_series,
    final_errors,
    list_results,
    load_result,
    pct,
    table,
    verdict,
)
from resnet_lab.experiments.degradation.runner import _history_row, _SuiteProgress, describe_device, run_suite
from resnet_lab.experiments.degradation.stats import (
    init_batch,
    INIT_DEPTHS,
    INIT_IMAGES,
    init_profile,
    INIT_SEEDS,
    init_signal,
    layer_stats,
)
from resnet_lab.experiments.degradation.suite import (
    DegradationError,
    depth_of,
    FAMILIES,
    FORMAT,
    get_suite,
    model_name,
    net_label,
    PEAK_FRACTION,
    PLAIN_MARGIN,
    RECIPE,
    results_dir,
    STATS_IMAGES,
    Suite,
    suite_configs,
    SUITES,
)

__all__ = [
    "_history_row",
    "_SuiteProgress",
    "ASSETS_DIR",
    "DegradationError",
    "depth_of",
    "describe_device",
    "effect",
    "FAMILIES",
    "fig6_series",
    "fig7_series",
    "final_errors",
    "FORMAT",
    "get_suite",
    "init_batch",
    "INIT_DEPTHS",
    "INIT_IMAGES",
    "init_profile",
    "INIT_SEEDS",
    "init_signal",
    "layer_stats",
    "list_results",
    "load_result",
    "model_name",
    "net_label",
    "pct",
    "PEAK_FRACTION",
    "PLAIN_MARGIN",
    "RECIPE",
    "results_dir",
    "run_suite",
    "STATS_IMAGES",
    "Suite",
    "suite_configs",
    "SUITES",
    "table",
    "verdict",
]
