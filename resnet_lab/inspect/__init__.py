"""Look inside a trained network: feature maps, Grad-CAM, and the test images it gets wrong.

Three groups of functions, all plain numpy/torch (the app and the CLI draw them):

- **Runs and their images** — ``open_run("latest")``, ``run_data_source(run)``, ``run_dataset(run)``,
  ``run_images(pred, data)``: a run's stored test predictions index the *full* test split
  (``predictions["indices"]``), so its images are the data source's ``test_x[indices]``; the stored labels are
  checked against the source's, so a run trained on other data is refused instead of silently showing the wrong
  pictures. Predictions are never recomputed.
- **Activations and Grad-CAM** — ``list_layers(model)`` (every conv, block and stage with its output shape),
  ``capture(model, names)`` (forward hooks, always removed), ``activations(...)``, ``gradcam(...)`` and
  ``layer_sweep(...)`` (captum's ``LayerGradCam``, imported lazily: captum stays off the training path),
  ``normalize_cam``, ``overlay``, ``feature_grid``.
- **Mistakes** — ``summary``, ``filter_predictions``, ``predictions_csv`` over the metrics of
  ``resnet_lab.metrics`` (top-k, per-class accuracy, the confusion matrix, most-confused pairs): vectorised numpy,
  fast on 10,000 predictions.

Models are used in eval mode and put back in the mode they were in. Hooks and captum runs on one model are
serialised by a per-model lock, because the app shares one cached model between browser sessions: without it
session A's hook could record session B's forward pass.
"""

from __future__ import annotations

from resnet_lab.inspect.activations import (
    Activations,
    activations,
    capture,
    channel_stats,
    class_probs,
    colorize,
    draw_box,
    feature_grid,
    strip,
    to_png,
    top_channels,
    upscale,
)
from resnet_lab.inspect.cam import (
    CamResult,
    cell_box,
    gradcam,
    gradcams,
    layer_rf,
    layer_sweep,
    normalize_cam,
    overlay,
    receptive_field_table,
)
from resnet_lab.inspect.layers import (
    branch_of,
    eval_mode,
    frozen,
    get_layer,
    Layer,
    list_layers,
    model_device,
    model_lock,
    resolve_layer_name,
    stages,
    to_batch,
)
from resnet_lab.inspect.predictions import enrich, filter_predictions, predictions_csv, SORTS, summary, topk
from resnet_lab.inspect.source import IMAGE_SIZE, InspectError, open_run, run_data_source, run_dataset, run_images

__all__ = [
    "Activations",
    "activations",
    "branch_of",
    "CamResult",
    "capture",
    "cell_box",
    "channel_stats",
    "class_probs",
    "colorize",
    "draw_box",
    "enrich",
    "eval_mode",
    "feature_grid",
    "filter_predictions",
    "frozen",
    "get_layer",
    "gradcam",
    "gradcams",
    "IMAGE_SIZE",
    "InspectError",
    "Layer",
    "layer_rf",
    "layer_sweep",
    "list_layers",
    "model_device",
    "model_lock",
    "normalize_cam",
    "open_run",
    "overlay",
    "predictions_csv",
    "receptive_field_table",
    "resolve_layer_name",
    "run_data_source",
    "run_dataset",
    "run_images",
    "SORTS",
    "stages",
    "strip",
    "summary",
    "to_batch",
    "to_png",
    "top_channels",
    "topk",
    "upscale",
]
