"""What one channel responds to: the test images that excite it most (OpenAI Microscope's "dataset examples").

``channel_examples(model, images, layer, mean=, std=)`` runs the test set once through the model with a forward
hook on ``layer`` and keeps, for every channel, the ``k`` images whose strongest unit (spatial max) is highest,
with that channel's activation map on each (to draw where in the image it fired). Written by hand because
captum and torchvision have no "top activating examples" search; it is one streaming top-k per batch.

``cached_examples(run, layer, images, ...)`` stores the result as an .npz in the cache folder, keyed by run,
checkpoint (size + mtime) and layer, so the pass runs once per run and layer; ``examples_job`` is the same as
a module-level job function for ``JobRegistry.start`` (it loads everything itself, so it also runs in a
worker process).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from resnet_lab import inspect as I
from resnet_lab.config import cache_dir
from resnet_lab.runs import atomic_write, open_run_folder

TOP_K = 9
BATCH = 250


@dataclass
class ChannelExamples:
    layer: str
    rows: np.ndarray     # int64 (C, k): positions in the ``images`` array, strongest first
    scores: np.ndarray   # float32 (C, k): the channel's spatial max on each of those images
    maps: np.ndarray     # float32 (C, k, H, W): the channel's activation map on each
    n_images: int

    @property
    def channels(self) -> int:
        return int(self.rows.shape[0])

    def save(self, path: Path) -> None:
        def write(fh):
            np.savez_compressed(fh, rows=self.rows, scores=self.scores, maps=self.maps,
                                n_images=np.int64(self.n_images), layer=np.array(self.layer))

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: Path) -> "ChannelExamples":
        with np.load(path, allow_pickle=False) as npz:
            return cls(str(npz["layer"]), npz["rows"], npz["scores"], npz["maps"], int(npz["n_images"]))


def channel_examples(model: nn.Module, images: np.ndarray, layer: str, *, mean: Sequence[float],
                     std: Sequence[float], k: int = TOP_K, batch: int = BATCH,
                     progress: Callable[[float, str], None] | None = None, stop=None) -> ChannelExamples:
    """One pass over ``images`` (uint8 NHWC); for every channel of ``layer`` the ``k`` most exciting images."""
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise I.InspectError("there are no images to search")
    k = max(1, min(int(k), n))
    device = I.model_device(model)
    module = I.get_layer(model, layer)
    best_scores = best_rows = best_maps = None
    with I.model_lock(model), I.eval_mode(model), torch.no_grad():
        for start in range(0, n, batch):
            if stop is not None and stop.is_set():
                raise I.InspectError("stopped before the pass over the test images was complete")
            x = I.to_batch(images[start:start + batch], mean, std, device)
            fmap = _forward_to(model, module, x)                      # (B, C, H, W)
            if fmap is None or fmap.dim() != 4:
                raise I.InspectError(f"layer {layer!r} does not output a feature map")
            scores = fmap.amax(dim=(2, 3)).T                          # (C, B)
            rows = torch.arange(start, start + len(x), device=scores.device).expand_as(scores)
            maps = fmap.permute(1, 0, 2, 3)                           # (C, B, H, W)
            if best_scores is not None:                               # merge with the best so far
                scores = torch.cat([best_scores, scores], 1)
                rows = torch.cat([best_rows, rows], 1)
                maps = torch.cat([best_maps, maps], 1)
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (C, k)
            best_scores = scores.gather(1, top)
            best_rows = rows.gather(1, top)
            best_maps = maps[torch.arange(maps.shape[0])[:, None], top]
            if progress is not None:
                done = min(start + batch, n)
                progress(done / n, f"{done:,} of {n:,} test images")
    return ChannelExamples(layer, best_rows.cpu().numpy().astype(np.int64), best_scores.cpu().numpy(),
                           best_maps.cpu().numpy().astype(np.float32), n)


class _Reached(Exception):
    """Raised by the hook once the layer has run: the rest of the network is not needed for this search."""


def _forward_to(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    seen: dict = {}

    def hook(_module, _inputs, output):
        seen["out"] = output.detach().float()
        raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    return seen.get("out")


def cache_path(run, layer: str, n_images: int) -> Path:
    """Where the examples of ``run`` at ``layer`` are cached: keyed by run folder, checkpoint and layer."""

    try:
        stat = run.checkpoint_path.stat()
        stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
    except OSError:
        stamp = "none"
    key = hashlib.sha256(f"{run.path.resolve()}|{stamp}".encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in layer)
    return cache_dir() / "channel-examples" / f"{run.id}-{key}" / f"{safe}-{n_images}.npz"


def cached(run, layer: str, n_images: int) -> ChannelExamples | None:
    path = cache_path(run, layer, n_images)
    if not path.exists():
        return None
    try:
        return ChannelExamples.load(path)
    except Exception:  # a damaged cache file is recomputed, not shown
        return None


def examples_job(job, run_path: str, reference: bool, layer: str, source: str | None, k: int = TOP_K) -> dict:
    """Job function (module level, picklable arguments): compute and cache one run's channel examples.

    ``run_path`` is the run's folder; ``reference=True`` opens it as a shipped reference (checksums verified)."""

    run = open_run_folder(run_path, reference)
    job.set_progress(0.0, "loading the network and the test images")
    model = run.load_model("cpu")
    data = I.run_dataset(run, source)
    images = I.run_images(run.predictions(), data)
    mean = tuple(run.config.get("mean") or data.mean)
    std = tuple(run.config.get("std") or data.std)
    result = channel_examples(model, images, layer, mean=mean, std=std, k=k,
                              progress=lambda f, msg: job.set_progress(f, msg), stop=job.stop_event)
    path = cache_path(run, layer, len(images))
    result.save(path)
    return {"path": str(path), "layer": layer, "channels": result.channels, "n_images": len(images)}
