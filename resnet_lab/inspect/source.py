"""A run and its images: ``open_run``, the run's data source, and the test images its stored predictions index (labels
checked, so another source's pictures are refused, never shown under this run's names).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from resnet_lab.data import load_dataset, safe_text
from resnet_lab.runs import RunError, RunStore

IMAGE_SIZE = 32


class InspectError(Exception):
    """Something the user can fix (a missing run, an unknown layer, other data than the run's); plain words."""


# --------------------------------------------------------------------------------------------------------------------
# Runs and their images


def open_run(spec: str | None = "latest", store=None, need_checkpoint: bool = False):
    """A run by id, or ``"latest"`` (the newest one with stored predictions). Raises InspectError naming
    the runs folder and what is in it."""

    store = store or RunStore()
    if spec is not None and not str(spec).strip():
        # an empty id (a blank --run, a cleared box) is not "latest": that would quietly show another run
        raise InspectError("the run id is empty; give a run id (python -m resnet_lab runs lists them) or 'latest'")
    spec = (spec or "latest").strip()
    try:
        store.check_root()
    except RunError as exc:
        raise InspectError(str(exc)) from None
    if spec == "latest":
        run = store.latest(with_predictions=True)
        if run is None:
            raise InspectError(f"no run with stored predictions in {store.root.resolve()}; train one first "
                               "(python -m resnet_lab train --preset quick-cpu) or set RESNET_LAB_RUNS")
    else:
        try:
            run = store.get(spec)
        except RunError as exc:
            ids = [r.id for r in store.list()[:5]]
            hint = f" Recent runs: {', '.join(ids)}." if ids else ""
            raise InspectError(f"{exc}.{hint}") from None
        if not run.has_predictions:
            raise InspectError(f"run {run.id} has no stored predictions (status: {run.status}); "
                               "it stopped or failed before its final evaluation")
    if need_checkpoint and not run.has_checkpoint:
        raise InspectError(f"run {run.id} has no saved weights (model.pt), so there is no network to look inside")
    return run


_DESCRIBED = re.compile(r"^(?:class folders|class-folder archive): (?P<path>.+) \([\d,]+ images[^)]*\)$")


def run_data_source(run) -> str | None:
    """The data source the run was trained on, as ``load_dataset`` accepts it (None when unknown).

    The trainer stores the source's description (``data_source``), e.g. ``"class folders: /x (300 images)"``
    or ``"torchvision CIFAR-10: ..."``, plus ``data`` when a source was named explicitly."""
    cfg = run.config or {}
    for key in ("data_path", "data"):
        if cfg.get(key):
            return _local(run, str(cfg[key]))
    described = str(cfg.get("data_source") or "").split("; subset ")[0].strip()
    if described.startswith("torchvision CIFAR-10"):
        return "cifar10"
    match = _DESCRIBED.match(described)
    return _local(run, match.group("path")) if match else None


def _local(run, source: str) -> str | None:
    # A shipped reference run names the path it was trained from on another machine: there, fall back to the
    # user's own source (None); run_images still checks every label, so other data is refused, not shown.
    if getattr(run, "reference", False) and source != "cifar10" and not Path(source).exists():
        return None
    return source


def run_dataset(run, source: str | None = None, progress=None):
    """The full data source of a run (``source`` overrides it), as a ``Dataset``; raises ``DataError``, or
    ``InspectError`` when its classes are not the run's (another source's images would be labelled with this
    run's class names, and its predictions would index other images)."""

    data = load_dataset(source or run_data_source(run), progress=progress)
    try:
        classes = run.classes
    except RunError as exc:
        raise InspectError(str(exc)) from None
    if classes and list(data.classes) != classes:
        raise InspectError(f"{data.source} has {_listed(data.classes)} but run {run.id} was trained on "
                           f"{_listed(classes)}; use the data the run was trained on")
    return data


def _listed(classes, limit: int = 10) -> str:
    names = ", ".join(safe_text(c, 40) for c in list(classes)[:limit])
    more = f", … {len(classes) - limit} more" if len(classes) > limit else ""
    return f"{len(classes)} classes ({names}{more})"


def run_images(pred: dict, data) -> np.ndarray:
    """The test images of a run, row-aligned with its stored predictions: uint8 (N, 32, 32, 3).

    ``data`` is a ``Dataset`` (the full source or any subset containing those images). Raises InspectError
    when an image is missing or the stored labels disagree with the data's (a run trained on other data)."""
    indices = np.asarray(pred["indices"], dtype=np.int64)
    test_index = np.asarray(data.test_index, dtype=np.int64)
    if len(test_index) and np.array_equal(test_index, np.arange(len(test_index))):
        rows = indices  # the full split: positions are indices
        missing = (indices < 0) | (indices >= len(test_index))
    else:
        order = np.argsort(test_index, kind="stable")
        where = np.searchsorted(test_index[order], indices)
        where = np.clip(where, 0, max(len(order) - 1, 0))
        rows = order[where] if len(order) else where
        missing = (test_index[rows] != indices) if len(order) else np.ones(len(indices), bool)
    if missing.any():
        raise InspectError(f"{int(missing.sum()):,} of the run's {len(indices):,} test images are not in "
                           f"{data.source} (it has {len(test_index):,} test images): the run was trained on "
                           "other data. Choose the run's data source in the sidebar.")
    labels = np.asarray(pred["labels"])
    wrong = data.test_y[rows] != labels
    if wrong.any():
        raise InspectError(f"the run's stored labels disagree with {data.source} on {int(wrong.sum()):,} of "
                           f"{len(labels):,} images: the run was trained on other data. Choose the run's data "
                           "source in the sidebar.")
    return data.test_x[rows]
