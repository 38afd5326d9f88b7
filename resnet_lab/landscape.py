"""Loss landscapes around a trained net (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

The loss is evaluated at ``theta + a * d1 + b * d2`` for two random Gaussian directions d1, d2 that are
*filter-normalised*: every filter (one output channel of a conv, one row of the fc layer) of a direction is
rescaled to the norm of the same filter of the trained weights. Without that, a net whose weights are
small would look sharp and one with large weights flat, and two nets could not be compared.

BN, as the paper's released code does it for these figures (``--dir_type weights --xignore biasbn``):
directions are zero on every 1-D parameter (biases, BN gamma and beta), and the loss is computed in eval
mode, so BN uses the running statistics of the trained model (``evaluation.py`` calls ``net.eval()``).

Direction seeds: d1 is drawn from ``torch.Generator().manual_seed(seed)``, d2 from ``seed + 1``, parameter by
parameter in ``named_parameters()`` order. A plain net and its option-A residual twin have identical
parameter shapes, so both get the *same* raw Gaussian draws, each then scaled to its own filters.

Written by hand: no maintained library computes filter-normalised slices for a PyTorch model (the
paper's code is an MPI/h5py script collection, not a package).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_lab.config import resolve_device, runs_dir
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, emit
from resnet_lab.experiments.degradation import ASSETS_DIR, describe_device, net_label
from resnet_lab.runs import atomic_write_json, list_saved_results, load_result_file, recording, RunError, RunStore
from resnet_lab.settings import invalid, MAX_SEED
from resnet_lab.training import SUBSET_SEED
from resnet_lab.transforms import normalize_batch

FORMAT = "resnet_lab.landscape/1"
# CPU: ~100 s for two narrow 32-layer nets on 2 cores (1,000 images x (7x7 + 6) points each);
# GPU: a finer picture in about the same time.
DEFAULTS = dict(images=1000, points=13, grid=7, span=1.0, seed=0, batch_size=500)
GPU_DEFAULTS = dict(images=5000, points=41, grid=25, span=1.0, seed=0, batch_size=1000)


class LandscapeError(Exception):
    """A landscape that cannot be computed as asked; the message says what to change."""


# -- directions -----------------------------------------------------------------------------------------


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    """Norm of every filter of a weight tensor: one value per entry of its first (output) dimension."""
    return t.detach().reshape(t.shape[0], -1).norm(dim=1)


def random_direction(model: torch.nn.Module, seed: int) -> list[torch.Tensor]:
    """A filter-normalised Gaussian direction, one tensor per parameter of ``model`` (same order/shape).

    Multi-dimensional parameters: Gaussian draws, each filter rescaled to the norm of the same filter of
    the weights. 1-D parameters (biases, BN gamma/beta): zero, so the direction never moves them.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for p in model.parameters():
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32)  # drawn on the CPU: the same on any device
        if p.dim() <= 1:
            d.zero_()
        else:
            scale = filter_norms(p).float().cpu() / (filter_norms(d) + 1e-10)
            d.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
        out.append(d.to(device=p.device, dtype=p.dtype))
    return out


# -- evaluation -----------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode: BN running statistics) on a normalised batch."""
    was_training = model.training
    model.eval()
    loss_sum, hits = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size]).float()
            loss_sum += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
            hits += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    n = max(len(x), 1)
    return loss_sum / n, hits / n


class _Perturbed:
    """Moves a model's parameters to ``theta + a*d1 + b*d2`` and puts the trained weights back on exit."""

    def __init__(self, model, directions):
        self.params = list(model.parameters())
        self.origin = [p.detach().clone() for p in self.params]
        self.directions = directions

    @torch.no_grad()
    def move(self, coords) -> None:
        for i, p in enumerate(self.params):
            p.copy_(self.origin[i])
            for c, d in zip(coords, self.directions):
                if c:
                    p.add_(d[i], alpha=float(c))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, w in zip(self.params, self.origin):
                p.copy_(w)


def surface(model, x, y, directions, xs, ys=None, batch_size: int = 500, progress=None,
            stop_event=None, known: dict | None = None) -> np.ndarray:
    """Loss on the line ``xs`` (1 direction) or the grid ``ys`` x ``xs`` (2 directions; rows are y).

    Points not reached before ``stop_event`` is set stay NaN. ``progress(done, total)`` after each point.
    ``known`` maps ``(a, b)`` to a loss already measured (the 1-D slice is the grid's row b = 0): reused, and
    every new point is added to it.
    """
    pts = [(float(a), 0.0) for a in xs] if ys is None else [(float(a), float(b)) for b in ys for a in xs]
    known = {} if known is None else known
    out = np.full(len(pts), np.nan)
    with _Perturbed(model, directions) as moved:
        for k, c in enumerate(pts):
            if stop_event is not None and stop_event.is_set():
                break
            key = (round(c[0], 6), round(c[1], 6))
            if key not in known:
                moved.move(c)
                known[key] = evaluate(model, x, y, batch_size)[0]
            out[k] = known[key]
            if progress is not None:
                progress(k + 1, len(pts))
    return out if ys is None else out.reshape(len(ys), len(xs))


# -- what the numbers say -------------------------------------------------------------------------------


def roughness(xs, line, grid_axis, grid) -> dict:
    """Shape measures of a 1-D slice and a 2-D grid (NaN-free parts only).

    - ``line_minima``: local minima of the 1-D slice (interior points lower than both neighbours); a clean
      bowl has 1.
    - ``line_excess_variation``: total up-and-down of the 1-D slice divided by what a curve falling
      monotonically to its lowest point and rising again would need, minus 1 (0 for a bowl).
    - ``nonconvex_fraction``: share of interior 2-D points whose finite-difference Hessian has a negative
      eigenvalue (Li et al. map |lambda_min / lambda_max| for the same purpose).
    - ``edge_rise``: mean loss on the 2-D grid's border minus the loss at its centre.
    """
    line = np.asarray(line, dtype=float)
    out: dict = {"line_minima": None, "line_excess_variation": None, "nonconvex_fraction": None, "edge_rise": None}
    if line.size >= 3 and np.isfinite(line).all():
        inner = (line[1:-1] < line[:-2]) & (line[1:-1] < line[2:])
        out["line_minima"] = int(inner.sum()) + int(line[0] < line[1]) + int(line[-1] < line[-2])
        low = int(np.argmin(line))
        needed = (line[0] - line[low]) + (line[-1] - line[low])
        total = float(np.abs(np.diff(line)).sum())
        out["line_excess_variation"] = float(total / needed - 1) if needed > 0 else 0.0
    g = np.asarray(grid, dtype=float)
    if g.ndim == 2 and g.shape[0] >= 3 and g.shape[1] >= 3 and np.isfinite(g).all():
        h = float(grid_axis[1] - grid_axis[0])
        fxx = (g[1:-1, 2:] - 2 * g[1:-1, 1:-1] + g[1:-1, :-2]) / h ** 2
        fyy = (g[2:, 1:-1] - 2 * g[1:-1, 1:-1] + g[:-2, 1:-1]) / h ** 2
        fxy = (g[2:, 2:] - g[2:, :-2] - g[:-2, 2:] + g[:-2, :-2]) / (4 * h ** 2)
        lam_min = (fxx + fyy) / 2 - np.sqrt(((fxx - fyy) / 2) ** 2 + fxy ** 2)
        out["nonconvex_fraction"] = float((lam_min < 0).mean())
        border = np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
        c = g.shape[0] // 2, g.shape[1] // 2
        out["edge_rise"] = float(border.mean() - g[c])
    return out


def compare(result: dict) -> dict | None:
    """Which of two nets of a result has the rougher surface, by each measure (None when not two nets)."""
    nets = [n for n in result.get("nets", []) if n.get("roughness")]
    if len(nets) != 2:
        return None
    a, b = nets
    out = {"nets": [a["label"], b["label"]]}
    for key in ("nonconvex_fraction", "line_minima", "line_excess_variation", "edge_rise"):
        va, vb = a["roughness"].get(key), b["roughness"].get(key)
        out[key] = None if va is None or vb is None else (a["label"] if va > vb else b["label"] if vb > va else None)
    return out


ROUGHNESS_MEASURES = ("nonconvex_fraction", "edge_rise", "line_excess_variation")  # what "rougher" counts
CLEAR_NONCONVEX_GAP = 0.1  # 10 percentage points more non-convex grid points: "clearly" rougher


def verdict(result: dict) -> dict | None:
    """Whether the plain net of a two-net result has the rougher surface (Li et al. 2018, Fig. 5), as data the
    page words: ``plain`` / ``other`` (labels), ``rougher_by`` (the measures of ``ROUGHNESS_MEASURES`` on which the
    plain net is rougher), ``nonconvex_gap`` (plain minus other, a fraction), ``kind`` — ``"clearly"`` (rougher by
    two of three measures and at least ``CLEAR_NONCONVEX_GAP`` more non-convex points), ``"slightly"`` (two of
    three, a smaller gap) or ``"not"`` — and ``other_steeper`` (the other net's walls rise faster: it sits in a
    narrower valley). None without exactly two measured nets, one of them plain."""
    cmp = result.get("comparison") or compare(result)
    nets = [n for n in result.get("nets", []) if n.get("roughness")]
    if not cmp or len(nets) != 2:
        return None
    plain = next((n for n in nets if (n.get("model") or "").startswith("plain")), None)
    if plain is None:
        return None
    other = next(n for n in nets if n is not plain)
    rougher = [k for k in ROUGHNESS_MEASURES if cmp.get(k) == plain["label"]]
    gap = plain["roughness"]["nonconvex_fraction"] - other["roughness"]["nonconvex_fraction"]
    kind = "not" if len(rougher) < 2 else "clearly" if gap >= CLEAR_NONCONVEX_GAP else "slightly"
    return {"plain": plain["label"], "other": other["label"], "rougher_by": rougher, "nonconvex_gap": gap,
            "kind": kind, "other_steeper": cmp.get("edge_rise") == other["label"],
            "plain_loss": plain["origin_loss"], "other_loss": other["origin_loss"]}


# -- running it on stored runs --------------------------------------------------------------------------


def _axis(n: int, span: float) -> np.ndarray:
    return np.round(np.linspace(-span, span, n), 6)


def run_images(run, n: int, data=None):
    """The first ``n`` images of the training set ``run`` was trained on, normalised as it saw them."""

    cfg = run.config
    if data is None:
        data = load_dataset(cfg.get("data"))
    sub = data.subset(train=cfg.get("subset"), test=cfg.get("test_subset"), seed=SUBSET_SEED)
    if n > len(sub.train_y):
        raise LandscapeError(f"run {run.id} trained on {len(sub.train_y):,} images; ask for at most that many")
    mean, std = cfg.get("mean") or sub.mean, cfg.get("std") or sub.std
    x = normalize_batch(torch.from_numpy(np.ascontiguousarray(sub.train_x[:n])), mean, std)
    return x, torch.from_numpy(sub.train_y[:n]).long(), sub.source


def check_settings(images: int, points: int, grid: int, span: float, seed: int = DEFAULTS["seed"]) -> None:
    """Raise LandscapeError listing every setting that cannot be used (``problems`` by setting, for the CLI)."""

    problems = {}
    for name, v, lo, what in (("images", images, 10, "training images"), ("points", points, 3, "points of the "
                              "1-D slice"), ("grid", grid, 3, "points per side of the 2-D grid")):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            problems[name] = f"the {what} must be a whole number ≥ {lo}; got {v!r}"
        elif name != "images" and v % 2 == 0:
            problems[name] = f"the {what} must be odd, so the trained weights (0, 0) are on it; got {v}"
    if isinstance(span, bool) or not isinstance(span, (int, float)) or not (0 < span <= 5) or not math.isfinite(span):
        problems["span"] = f"the span must be a number in (0, 5]; got {span!r}"
    # the second direction is drawn from seed + 1, which torch.manual_seed must accept too
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED - 1:
        problems["seed"] = (f"the seed must be a whole number from 0 to 2**63-2 = {MAX_SEED - 1} (the second "
                            f"direction uses seed + 1); got {seed!r}")
    if problems:
        raise invalid(LandscapeError, problems, "landscape settings")


def defaults(device=None) -> dict:
    """The coarse CPU settings, or the finer GPU ones when ``device`` resolves to CUDA."""

    return dict(GPU_DEFAULTS if resolve_device(device).type == "cuda" else DEFAULTS)


def compute(run_ids, *, images: int = DEFAULTS["images"], points: int = DEFAULTS["points"],
            grid: int = DEFAULTS["grid"], span: float = DEFAULTS["span"], seed: int = DEFAULTS["seed"],
            batch_size: int = DEFAULTS["batch_size"], device: str = "cpu", store=None, data=None,
            callback: Callback | None = None, stop_event=None, out_dir=None, command: str | None = None) -> dict:
    """1-D slice and 2-D grid of the training loss around each run's trained weights; saved as JSON.

    Every net gets the same direction seeds, span and images (each run's own training subset, which is
    the same for nets of one suite). Progress goes out as ``log`` events with ``progress``; a stop leaves
    the unreached points NaN (null in JSON) and marks the result ``stopped``.
    """

    run_ids = list(dict.fromkeys(run_ids or []))
    if not 1 <= len(run_ids) <= 2:
        raise LandscapeError("give one or two runs (e.g. a plain net and its residual twin)")
    check_settings(images, points, grid, span, seed)
    dev = resolve_device(device)
    store = store or RunStore()
    runs = []
    for rid in run_ids:
        try:
            run = store.get(rid)
        except RunError as exc:
            raise LandscapeError(str(exc)) from exc
        if run is None:
            raise LandscapeError(f"no run '{rid}' in {store.root}; list them with: python -m resnet_lab runs")
        if not run.has_checkpoint:
            raise LandscapeError(f"run {rid} has no saved weights (model.pt)")
        runs.append(run)
    line_axis, grid_axis = _axis(points, span), _axis(grid, span)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"format": FORMAT, "id": f"{stamp}-landscape-{'-'.join(r.config.get('model', '?') for r in runs)}",
              "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
              "device": _describe(dev), "settings": {"images": images, "points": points, "grid": grid, "span": span,
              "seed": seed, "direction_seeds": [seed, seed + 1], "directions": "filter-normalised Gaussian; zero on "
              "biases and BN gamma/beta; BN in eval mode (trained running statistics)", "loss": "cross-entropy, "
              "mean over the images (training images, no augmentation)"},
              "line_axis": line_axis.tolist(), "grid_axis": grid_axis.tolist(), "nets": [], "seconds_total": None}
    path = Path(out_dir) if out_dir is not None else runs_dir() / "landscape"
    path = path / f"{result['id']}.json"
    total = len(runs) * (points + grid * grid)
    done = [0]

    def progress(net_label):
        def tick(k, n):
            done[0] += 1
            if k == n or k % 5 == 0:
                emit(callback, "log", progress=done[0] / total, message=f"{net_label}: {k}/{n} points")
        return tick

    with recording(path, result, stop_event, finish=lambda r: r.update(comparison=compare(r))):
        for run in runs:
            result["nets"].append(_measure(run, dev, data, images, seed, line_axis, grid_axis, batch_size,
                                           progress, stop_event))
            atomic_write_json(path, result)
            if stop_event is not None and stop_event.is_set():
                break
    result["path"] = str(path)
    emit(callback, "log", message=f"landscape {result['status']} in {result['seconds_total']:.0f} s", path=str(path),
         progress=1.0)
    return result


def _measure(run, dev, data, images, seed, line_axis, grid_axis, batch_size, progress, stop_event) -> dict:
    """One net of ``compute``: its loss at the origin, 1-D slice, 2-D grid and their shape measures."""
    model = run.load_model(dev)
    x, y, source = run_images(run, images, data)
    # channels_last: ~1.3x faster convolutions on a CPU as well as on a GPU
    model = model.to(memory_format=torch.channels_last)
    x, y = x.to(dev).contiguous(memory_format=torch.channels_last), y.to(dev)
    label = _label(run)
    net = {"run_id": run.id, "model": run.config.get("model"), "label": label,
           "model_options": run.config.get("model_options") or {}, "images_source": source}
    net["origin_loss"], net["origin_acc"] = evaluate(model, x, y, batch_size)
    dirs = [random_direction(model, seed), random_direction(model, seed + 1)]
    known = {(0.0, 0.0): net["origin_loss"]}
    line = surface(model, x, y, dirs, line_axis, batch_size=batch_size, progress=progress(label + " 1-D"),
                   stop_event=stop_event, known=known)
    g = surface(model, x, y, dirs, grid_axis, grid_axis, batch_size=batch_size, progress=progress(label + " 2-D"),
                stop_event=stop_event, known=known)
    net.update(line=_json_list(line), grid=[_json_list(row) for row in g],
               roughness=roughness(line_axis, line, grid_axis, g))
    return net


def job(job, run_ids, **kwargs) -> dict:
    """``compute`` as a background job: ``registry.start("landscape", functools.partial(job, run_ids=[...], ...))``
    (module-level with picklable arguments, so it also runs in a spawned worker process)."""
    return compute(run_ids, callback=job.emit, stop_event=job.stop_event, **kwargs)


def load_result(path) -> dict:
    """A landscape result JSON, checked to be one; raises LandscapeError with the reason otherwise."""

    return load_result_file(path, FORMAT, "landscape", LandscapeError)


def list_results(root=None, include_shipped: bool = True) -> list[dict]:
    """Saved landscapes, newest first: this machine's (``<runs root>/landscape``), then shipped ones."""

    folders = [(Path(root) if root else runs_dir() / "landscape", False)] + ([(ASSETS_DIR, True)] if include_shipped
                                                                            else [])
    return list_saved_results(folders, load_result, LandscapeError)


def _json_list(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float).ravel()]


def _label(run) -> str:
    name = net_label(run.config.get("model", "?"))
    opts = run.config.get("model_options") or {}
    if opts.get("zero_init_residual"):
        name += " (zero-init)"
    return name


def _describe(dev) -> str:
    return describe_device(dev)
