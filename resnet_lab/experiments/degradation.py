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

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_lab.config import resolve_data_source, resolve_device, runs_dir
from resnet_lab.data import load_dataset
from resnet_lab.events import Callback, emit, Hook
from resnet_lab.models import build_seeded, list_models
from resnet_lab.models.resnet import BasicBlock
from resnet_lab.runs import atomic_write_json, list_saved_results, load_result_file, recording, RunStore
from resnet_lab.settings import invalid
from resnet_lab.training import train, TrainConfig, TrainingError
from resnet_lab.transforms import normalize_batch
from resnet_lab.workers import become_worker, mirror, spawn_context, spawn_without_main

FORMAT = "resnet_lab.degradation/1"
FAMILIES = ("plain", "resnet")
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "degradation"


class DegradationError(Exception):
    """A suite that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Suite:
    name: str
    label: str
    depths: tuple[int, ...]
    epochs: int
    batch_size: int
    lr_max: float
    subset: int | None = None  # training images (class-balanced); None = all
    test_subset: int | None = None
    note: str = ""
    width: int = 16  # first-stage filters (the paper: 16)
    augment: bool = True  # crop + flip (the paper); off measures optimisation alone
    zero_init: bool = False  # residual branches end on a BN with gamma = 0
    stats_images: int = 256  # test images for the per-layer statistics


SUITES: dict[str, Suite] = {
    # The lesson on a CPU in class time. Why these choices (the page says it too):
    # - depth 8 vs 32: one block per stage against five — the widest depth ratio (4x) a CPU can afford;
    # - width 8 (8/16/32 filters): a quarter of the paper's multiply-adds, so 32 layers train in seconds;
    # - no augmentation, 1,000 images, 12 epochs: degradation is about *optimisation*, so the training error is
    #   measured on exactly the images the nets fit. In 8 epochs ResNet-32 was still behind ResNet-8 (63.4% vs
    #   57.7%, seed 0); in 12 it is 8.8-16.3 points ahead over seeds 0-2 (docs/experiments.md).
    # - one thread per net, two nets at a time in worker processes (run_suite): the result is the same bits
    #   whatever the machine's thread count (with 2 threads per net, seed 0 once ended +1.8 instead of -16.3),
    #   and two single-threaded nets use 2 cores better than one net with 2 threads.
    "cpu": Suite("cpu", "CPU (class demo): plain/residual 8 and 32 layers, 8 filters wide, 1,000 images",
                 depths=(8, 32), epochs=12, batch_size=32, lr_max=0.1, subset=1000, test_subset=500, width=8,
                 augment=False, stats_images=128,
                 note="CPU demo, the default without a GPU: the paper's nets cut down (8 instead of 16 filters, "
                      "depths 8 and 32, 1,000 training images without augmentation, 12 epochs) so that all four "
                      "nets train in a few minutes on 2 CPU cores, two at a time. Training error, not test error, "
                      "is the lesson: 1,000 images without augmentation overfit, so the test error is far above "
                      "the paper's."),
    # The demonstration for a GPU: the four nets of the paper's comparison on all of CIFAR-10, short enough
    # to run during a lecture.
    "quick": Suite("quick", "Quick (GPU): plain/residual 20 and 56 on all of CIFAR-10",
                   depths=(20, 56), epochs=12, batch_size=128, lr_max=0.1,
                   note="4 nets x 12 epochs on 50,000 images. Made for a GPU (target: under 3 minutes on one H100); "
                        "on a CPU it takes hours — use 'cpu' there."),
    # The paper's Fig. 6 depths (20/32/44/56; 110 on request), with a longer schedule.
    "paper": Suite("paper", "Paper (GPU): depths 20/32/44/56 on all of CIFAR-10",
                   depths=(20, 32, 44, 56), epochs=30, batch_size=128, lr_max=0.1,
                   note="8 nets (10 with 110 layers) x 30 epochs on 50,000 images: tens of minutes on a GPU. "
                        "The paper trained for ~160 epochs (64k iterations)."),
    # The first CPU demo, kept so its shipped result (assets/degradation/mini.json) can be re-run. It shows only
    # the plain half: ResNet-56 does not beat ResNet-20 in 4 epochs.
    "mini": Suite("mini", "Mini (old CPU demo): plain/residual 20 and 56 on a 3,000-image subset",
                  depths=(20, 56), epochs=4, batch_size=32, lr_max=0.1, subset=3000, test_subset=1000,
                  note="The first CPU demo: the four nets of 'quick' on 3,000 training / 1,000 test images for 4 "
                       "epochs (4–8 minutes on 2 CPU cores). It shows the plain half only — ResNet-56 does not "
                       "overtake ResNet-20 in 4 epochs. Superseded by 'cpu'."),
}

# The shared recipe. cutout 0: the paper used crop + flip only. pipeline "torch": the same batched augmentation
# on every device, so a CPU and a GPU run see the same images in the same order.
RECIPE = dict(optimizer="sgd", momentum_max=0.9, momentum_min=0.9, nesterov=False, weight_decay=1e-4,
              label_smoothing=0.0, annihilation=True, augment=True, cutout=0, pipeline="torch", seed=0,
              eval_every=1, checkpoint_every=0)
PEAK_FRACTION = 0.3  # one-cycle: LR warms up for the first 30% of the epochs, then anneals
STATS_IMAGES = 256  # test images in the fixed batch for the per-layer statistics
# "Clearly higher": the deeper plain net must end at least this much above the shallow one (train error, 0..1).
# The residual pair has no slack: the deeper net must end at or below the shallow one.
PLAIN_MARGIN = 0.03


def model_name(family: str, depth: int) -> str:
    return f"{family}{depth}"


def depth_of(name: str) -> int:
    """plain56 -> 56, resnet110 -> 110."""
    for family in FAMILIES:
        if name.startswith(family) and name[len(family):].isdigit():
            return int(name[len(family):])
    raise DegradationError(f"'{name}' is not a plain/resnet CIFAR net")


def net_label(name: str) -> str:
    """plain56 -> 'plain-56', resnet20 -> 'ResNet-20' (the paper's spelling)."""
    for family in FAMILIES:
        if name.startswith(family) and name[len(family):].isdigit():
            return f"{'plain' if family == 'plain' else 'ResNet'}-{name[len(family):]}"
    return name


def suite_configs(suite: str | Suite = "cpu", *, epochs: int | None = None, subset: int | None = None,
                  test_subset: int | None = None, batch_size: int | None = None, depths=None,
                  include_110: bool = False, device: str = "auto", data: str | None = None, seed: int = 0,
                  zero_init: bool | None = None) -> list:
    """One ``TrainConfig`` per net, shallow to deep, plain before residual at each depth.

    ``seed`` sets the initial weights, the batch order and the augmentation draws (the training subset is
    the same for every seed); ``zero_init`` (default: the suite's) starts each residual branch's last BN at 0.
    """

    s = get_suite(suite)
    depths = tuple(sorted(set(int(d) for d in (depths or s.depths))))
    if include_110 and 110 not in depths:
        depths = depths + (110,)
    epochs = s.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise DegradationError("epochs must be a whole number ≥ 1")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DegradationError("seed must be a whole number ≥ 0")
    zero_init = s.zero_init if zero_init is None else bool(zero_init)
    recipe = {**RECIPE, "augment": s.augment, "seed": seed}
    available = set(list_models())
    configs = []
    for depth in depths:
        for family in FAMILIES:
            name = model_name(family, depth)
            if name not in available:
                raise DegradationError(f"no model '{name}' in the registry (depths must be 6n+2 with a "
                                       f"registered net: 8, 14, 20, 32, 44, 56, 110)")
            options = {"width": s.width} if s.width != 16 else {}  # the paper's width: the options of old results
            if family == "resnet":
                options = {"shortcut": "A", **options, **({"zero_init_residual": True} if zero_init else {})}
            configs.append(TrainConfig(
                model=name, model_options=options,
                epochs=epochs, peak_epoch=round(max(PEAK_FRACTION * epochs, 0.5), 2),
                lr_max=s.lr_max, lr_min=s.lr_max / 10, batch_size=batch_size or s.batch_size,
                subset=s.subset if subset is None else (subset or None),
                test_subset=s.test_subset if test_subset is None else (test_subset or None),
                device=device, data=data, preset=f"degradation-{s.name}", **recipe))

    for cfg in configs:
        problems = cfg.validate()
        if problems:  # by TrainConfig field: the CLI names its own options (--batch-size)
            raise invalid(DegradationError, problems, "suite settings")
    return configs


def get_suite(suite: str | Suite) -> Suite:
    if isinstance(suite, Suite):
        return suite
    if suite not in SUITES:
        raise DegradationError(f"unknown suite '{suite}'; choose one of {', '.join(SUITES)}")
    return SUITES[suite]


# -- per-layer statistics (Fig. 7 and gradient norms) -------------------------------------------------


def layer_stats(model, x, y, responses_in_eval: bool = True) -> dict:
    """Response std and gradient norm of every 3x3 conv -> BN pair of ``model`` on the batch ``(x, y)``.

    ``x`` is a normalised float batch on the model's device. Responses are read in eval mode (running
    statistics, as at test time: the paper's Fig. 7) unless ``responses_in_eval`` is False — right after
    initialisation the running statistics are still 0/1, so there BN's batch statistics are what the first
    training step sees. Gradients always use batch statistics, as in training. The model's BN running
    statistics change (a forward pass in train mode): pass a copy you do not need afterwards.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    conv_of_output: dict[int, str] = {}
    keep: list = []  # holds conv outputs alive so their id() stays unique during the pass
    pairs: list[tuple[str, str]] = []
    stds: dict[str, float] = {}
    handles = []

    def conv_hook(name):
        def hook(module, inputs, output):
            if module.kernel_size == (3, 3):
                keep.append(output)
                conv_of_output[id(output)] = name
        return hook

    def bn_hook(name):
        def hook(module, inputs, output):
            conv = conv_of_output.get(id(inputs[0]))
            if conv is None:
                return  # a BN after a 1x1 projection, or a pre-activation BN: not a 3x3 layer's response
            pairs.append((conv, name))
            o = output.detach().float()
            per_channel = o.transpose(0, 1).reshape(o.shape[1], -1).std(dim=1)
            stds[name] = float(per_channel.mean())
        return hook

    modules = dict(model.named_modules())
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook(name)))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_hook(bn_hook(name)))
    try:
        model.train(not responses_in_eval)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        keep.clear()
    convs = [c for c, _ in pairs]
    bns = [b for _, b in pairs]

    model.train()
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = []
    for c in convs:
        g = modules[c].weight.grad
        grads.append(float(g.norm()) if g is not None else 0.0)
    model.zero_grad(set_to_none=True)
    model.eval()
    return {"layers": bns, "convs": convs, "response_std": [stds[b] for b in bns], "grad_norm": grads,
            "loss": float(loss.detach())}


def _stats_batch(dataset, config, device, n: int = STATS_IMAGES):
    """The first ``n`` test images of the subset the run evaluates on, normalised with its train statistics."""
    import torch


    sub = dataset.subset(train=config.subset, test=config.test_subset, seed=config.seed)
    x = normalize_batch(torch.from_numpy(sub.test_x[:n]), sub.mean, sub.std).to(device)
    y = torch.from_numpy(sub.test_y[:n]).to(device)
    return x, y


# -- running a suite ------------------------------------------------------------------------------------


def results_dir(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else runs_dir() / "degradation"


def run_suite(suite: str | Suite = "cpu", *, data: str | None = None, dataset=None, epochs: int | None = None,
              subset: int | None = None, test_subset: int | None = None, batch_size: int | None = None,
              depths=None, include_110: bool = False, device: str = "auto", callback: Callback | None = None,
              stop_event=None, store=None, out_dir: str | Path | None = None, command: str | None = None,
              stats_images: int | None = None, seed: int = 0, zero_init: bool | None = None,
              workers: int | None = None) -> dict:
    """Train every net of the suite and return the suite result (also saved as JSON).

    ``dataset`` (a loaded ``Dataset``, full or not) saves decoding it again; the suite's subset is cut from
    it by the trainer. Events: the trainer's own (each with ``net``, ``net_index``, ``nets`` added and
    ``progress`` for the whole suite) and ``log`` events between nets. ``stop_event`` ends the nets in
    progress after their current batch (their runs are kept, marked stopped) and skips the rest. A net that
    fails (e.g. its loss turns NaN) is recorded as failed and the suite goes on.

    On a CPU every net trains with one intra-op thread, so a result does not depend on how many threads or
    workers produced it; ``workers`` nets train at once in worker processes (default: torch's thread count,
    i.e. the cores this process may use). On a GPU the nets train one after another, here.
    """
    import torch


    s = get_suite(suite)
    source = resolve_data_source(data) if dataset is None or data is not None else str(dataset.path or dataset.source)
    configs = suite_configs(s, epochs=epochs, subset=subset, test_subset=test_subset, batch_size=batch_size,
                            depths=depths, include_110=include_110, device=device, data=source, seed=seed,
                            zero_init=zero_init)
    stats_images = s.stats_images if stats_images is None else stats_images
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise DegradationError(str(exc)) from exc
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise DegradationError("workers must be a whole number ≥ 1")
    workers = 1 if dev.type != "cpu" else max(1, min(len(configs), workers or torch.get_num_threads()))
    if dataset is None:
        emit(callback, "log", message=f"loading {source}")
        dataset = load_dataset(data)
    store = store or RunStore()
    store.check_writable()
    result = _new_result(s, configs, dev, command, dataset.source, stats_images,
                         s.zero_init if zero_init is None else bool(zero_init), workers)
    path = results_dir(out_dir) / f"{result['id']}.json"
    emit(callback, "log", message=f"{s.label}: {len(configs)} nets" + (f", {workers} at a time" if workers > 1 else ""),
         suite_id=result["id"], nets=[c.model for c in configs], progress=0.0)
    atomic_write_json(path, result)
    suite_run = _SuiteProgress(result, configs, path, callback)
    try:
        with recording(path, result, stop_event, finish=lambda r: r.update(effect=effect(r))):
            if workers > 1:
                _train_in_workers(suite_run, dataset, stats_images, store, stop_event, workers)
            else:
                _train_here(suite_run, dataset, dev, stats_images, store, stop_event)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["path"] = str(path)
    end = {"progress": 1.0} if result["status"] == "done" else {}
    emit(callback, "log", message=f"suite {result['status']} in {result['seconds_total']:.0f} s",
         suite_id=result["id"], path=str(path), **end)
    return result


def _new_result(s: Suite, configs, dev, command, data_source, stats_images, zero_init, workers) -> dict:
    first = configs[0]
    return {
        "format": FORMAT, "id": f"{time.strftime('%Y%m%d-%H%M%S')}-{s.name}-{_token()}", "suite": s.name,
        "label": s.label, "note": s.note, "status": "running", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": describe_device(dev, workers), "command": command, "data_source": data_source,
        "settings": {"depths": sorted({depth_of(c.model) for c in configs}),
                     "epochs": first.epochs, "batch_size": first.batch_size, "lr_max": first.lr_max,
                     "lr_min": first.lr_min, "peak_epoch": first.peak_epoch, "subset": first.subset,
                     "test_subset": first.test_subset, "stats_images": stats_images, "width": s.width,
                     "zero_init": zero_init, **{k: first.to_dict()[k] for k in RECIPE}},
        "nets": [], "seconds_total": None, "effect": None,
    }


class _SuiteProgress:
    """The suite result as the nets' events arrive: history rows, messages, suite-wide progress, and the
    JSON file rewritten after every net (so a stop or a crash keeps what finished)."""

    def __init__(self, result: dict, configs, path: Path, callback) -> None:
        self.result, self.configs, self.path, self.callback = result, configs, path, callback
        self.n = len(configs)
        self.nets: dict[int, dict] = {}
        self.ended: set[int] = set()
        self.fraction = [0.0] * self.n

    def begin(self, i: int) -> dict:
        if i in self.nets:  # already begun (its events or result overtook the "begins" message)
            return self.nets[i]
        cfg = self.configs[i]
        net = {"model": cfg.model, "label": net_label(cfg.model),
               "family": "plain" if cfg.model.startswith("plain") else "resnet", "depth": depth_of(cfg.model),
               "run_id": None, "status": "running", "history": [], "final_train_error": None,
               "final_test_error": None, "seconds": None, "error": None, "params": None, "stats": {}}
        self.nets[i] = net
        self.result["nets"] = [self.nets[k] for k in sorted(self.nets)]  # suite order, whatever ran first
        self.log(i, "measuring the initial network")
        return net

    def log(self, i: int, text: str, **extra) -> None:
        emit(self.callback, "log", message=f"{net_label(self.configs[i].model)} ({i + 1}/{self.n}): {text}",
             net=self.configs[i].model, net_index=i, nets=self.n, progress=sum(self.fraction) / self.n, **extra)

    def event(self, i: int, event: dict) -> None:
        """A trainer event of net ``i``: recorded, labelled, and passed on."""
        if i not in self.nets:
            self.begin(i)
        cfg, net = self.configs[i], self.nets[i]
        e = dict(event, net=cfg.model, net_index=i, nets=self.n)
        if i in self.ended:  # a worker's last events can arrive after its result: recorded already
            e.pop("progress", None)
            if self.callback is not None:
                self.callback(e)
            return
        if "progress" in e:
            self.fraction[i] = float(e["progress"])
            e["progress"] = sum(self.fraction) / self.n
        if e["type"] == "epoch":
            row = _history_row(e)
            net["history"].append(row)
            e["message"] = (f"{net['label']} ({i + 1}/{self.n}) epoch {e['epoch']}/{cfg.epochs}: train error "
                            f"{row['train_error']:.1%}" + (f", test error {row['test_error']:.1%}"
                                                            if "test_error" in row else ""))
        elif e["type"] == "start":
            net["run_id"] = e.get("run_id")
            e["message"] = f"{net['label']} ({i + 1}/{self.n}): training"
        if self.callback is not None:
            self.callback(e)

    def end(self, i: int, outcome: dict) -> None:
        """Net ``i`` ended (``outcome``: what ``_train_net`` returned); save the suite."""

        if i not in self.nets:  # its "begins" message is still in the queue
            self.begin(i)
        self.ended.add(i)
        net = self.nets[i]
        net.update({k: v for k, v in outcome.items() if k != "history"})
        if outcome.get("history"):
            net["history"] = outcome["history"]
        self.fraction[i] = 1.0
        atomic_write_json(self.path, self.result)
        if net["status"] == "failed":
            self.log(i, f"failed: {net['error']}")
        else:
            self.log(i, f"{net['status']}: final train error {pct(net['final_train_error'])}, test error "
                        f"{pct(net['final_test_error'])}")


def _history_row(event: dict) -> dict:
    row = {"epoch": event["epoch"], "train_error": 1 - event["train_acc"], "train_loss": event["train_loss"],
           "seconds": event["seconds"]}
    if "test_acc" in event:
        row.update(test_error=1 - event["test_acc"], test_loss=event["test_loss"])
    return row


class _LayerStats(Hook):
    """The per-layer statistics of the net being trained, as a trainer hook: on the model as built and on the
    final one. Each is taken on a copy, since a train-mode forward pass moves BN's running statistics."""

    def __init__(self, x, y) -> None:
        self.x, self.y, self.params, self.stats = x, y, None, {}

    def before_fit(self, model) -> None:
        self.params = sum(p.numel() for p in model.parameters())
        self.stats["init"] = layer_stats(copy.deepcopy(model), self.x, self.y, responses_in_eval=False)

    def after_fit(self, model, epochs_done: int) -> None:
        self.stats["trained"] = layer_stats(copy.deepcopy(model), self.x, self.y, responses_in_eval=True)


def _train_net(cfg, dataset, dev, stats_images: int, store, stop_event, on_event) -> dict:
    """One net of a suite: training, with per-layer statistics at initialisation and after training.
    Returns what the suite records of it; ``on_event`` receives the trainer's events."""

    history: list[dict] = []

    def record(event):
        if event["type"] == "epoch":
            history.append(_history_row(event))
        on_event(event)

    stats = _LayerStats(*_stats_batch(dataset, cfg, dev, stats_images))
    t_net = time.perf_counter()
    try:
        run = train(cfg, data=dataset, callback=record, stop_event=stop_event, store=store, hooks=(stats,))
    except TrainingError as exc:
        return dict(params=stats.params, stats=stats.stats, status="failed", error=str(exc),
                    seconds=time.perf_counter() - t_net, history=history)
    out = dict(params=stats.params, stats=stats.stats, seconds=time.perf_counter() - t_net, run_id=run.id,
               status=run.status, history=history)
    if history:
        out["final_train_error"] = history[-1]["train_error"]
        out["final_test_error"] = 1 - run.metrics["top1"] if "top1" in run.metrics else None
    return out


def _train_here(progress: _SuiteProgress, dataset, dev, stats_images, store, stop_event) -> None:
    """The nets one after another in this process (a GPU, or one CPU worker)."""
    import torch

    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)  # one thread per net on a CPU: the same numbers as the worker processes give
    try:
        for i, cfg in enumerate(progress.configs):
            if stop_event is not None and stop_event.is_set():
                break
            progress.begin(i)
            outcome = _train_net(cfg, dataset, dev, stats_images, store, stop_event,
                                 lambda e, i=i: progress.event(i, e))
            progress.end(i, outcome)
            if outcome["status"] == "stopped":
                break
    finally:
        torch.set_num_threads(threads)


# Worker processes of a CPU suite. Why by hand: each net must train in a process of its own with one thread
# (torch's thread count is per process), report every event live and obey Stop; a process pool gives the
# processes, a queue the events, an Event the stop.
_WORKER: dict = {}


def _worker_init(events, stop, dataset, source) -> None:
    import torch

    # Ctrl-C is the parent's to turn into Stop; a killed suite (job cancelled, SIGKILL) leaves no worker behind
    become_worker(every_s=1.0, code=1)
    torch.set_num_threads(1)
    if dataset is None:
        dataset = load_dataset(source)  # from the decoded cache the parent just filled: a second or two
    _WORKER.update(events=events, stop=stop, dataset=dataset)


def _worker_net(i: int, cfg, stats_images: int, store) -> dict | None:
    import torch

    events, stop = _WORKER["events"], _WORKER["stop"]
    if stop.is_set():
        return None  # stopped before this net began: skipped, as in a serial suite
    events.put((i, None))  # begins
    return _train_net(cfg, _WORKER["dataset"], torch.device("cpu"), stats_images, store, stop,
                      lambda e: events.put((i, e)))


def _train_in_workers(progress: _SuiteProgress, dataset, stats_images, store, stop_event, workers: int) -> None:
    """The nets in ``workers`` processes at once, deepest first (the longest jobs first balance the load)."""
    import queue as queue_mod
    import threading
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait


    ctx = spawn_context()
    events, stop = ctx.Queue(), ctx.Event()
    order = sorted(range(progress.n), key=lambda k: (-depth_of(progress.configs[k].model), k))
    shipped = None if dataset.path else dataset  # a dataset read from disk is read again there, from the cache
    done_watching = threading.Event()
    mirror(stop_event, stop, until=done_watching)  # the caller's stop flag -> the workers' Event

    def drain(timeout: float) -> None:
        try:
            while True:
                i, e = events.get(timeout=timeout)
                timeout = 0
                if e is None:
                    progress.begin(i)
                else:
                    progress.event(i, e)
        except queue_mod.Empty:
            pass

    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(events, stop, shipped, dataset.path)) as pool:
            with spawn_without_main():  # the workers start on these submits (spawn: one per submit, up to workers)
                pending = {pool.submit(_worker_net, i, progress.configs[i], stats_images, store): i for i in order}
            while pending:
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain(0.05)
                for future in finished:
                    i = pending.pop(future)
                    outcome = future.result()  # a worker's unexpected error ends the suite, as it would serially
                    if outcome is not None:
                        drain(0.05)  # this net's last events before its end
                        progress.end(i, outcome)
    finally:
        done_watching.set()
        stop.set()
        drain(0)


def describe_device(dev, workers: int | None = None) -> str:
    """What a result was measured on: 'NVIDIA H100 80GB HBM3', 'cpu (2 cores, 2 threads)', or for a suite
    'cpu (2 cores, 2 nets at a time, 1 thread each)'."""
    import os

    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if workers is None:
        return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"cpu ({os.cpu_count()} cores, {workers} net{'s' if workers > 1 else ''} at a time, 1 thread each)"


def _token() -> str:
    import secrets

    return secrets.token_hex(2)


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# -- reading results ------------------------------------------------------------------------------------


def final_errors(result: dict) -> dict[str, dict]:
    """model -> {train_error, test_error, seconds, status} for every net of a result."""
    return {n["model"]: {"train_error": n.get("final_train_error"), "test_error": n.get("final_test_error"),
                         "seconds": n.get("seconds"), "status": n.get("status")} for n in result.get("nets", [])}


def effect(result: dict) -> dict:
    """Does the result show degradation? Compares the shallowest with the deepest finished net per family.

    ``plain_gap`` / ``residual_gap``: deep minus shallow final training error (0..1). ``plain_degrades``: the
    deeper plain net ends at least ``PLAIN_MARGIN`` higher ("clearly"); ``residual_ok``: the deeper residual net
    ends at or below the shallow one (gap ≤ 0); ``shows``: both. A value is None when a net is missing
    (stopped or failed before finishing). Computed from the nets, so old result files get today's rule.
    """
    done = {n["model"]: n for n in result.get("nets", [])
            if n.get("status") == "done" and n.get("final_train_error") is not None}
    depths = sorted({n["depth"] for n in result.get("nets", [])})
    out: dict = {"shallow": None, "deep": None, "plain_degrades": None, "residual_ok": None, "shows": None,
                 "plain_gap": None, "residual_gap": None, "plain_margin": PLAIN_MARGIN, "residual_margin": 0.0}
    if len(depths) < 2:
        return out
    shallow, deep = depths[0], depths[-1]
    if 56 in depths and 20 in depths:  # the paper's headline pair, even when 110 is included
        shallow, deep = 20, 56
    out.update(shallow=shallow, deep=deep)

    def err(family, depth):
        n = done.get(model_name(family, depth))
        return None if n is None else n["final_train_error"]

    ps, pd, rs, rd = err("plain", shallow), err("plain", deep), err("resnet", shallow), err("resnet", deep)
    if ps is not None and pd is not None:
        out["plain_gap"] = pd - ps
        out["plain_degrades"] = out["plain_gap"] >= PLAIN_MARGIN
    if rs is not None and rd is not None:
        out["residual_gap"] = rd - rs
        out["residual_ok"] = out["residual_gap"] <= 0
    if out["plain_degrades"] is not None and out["residual_ok"] is not None:
        out["shows"] = out["plain_degrades"] and out["residual_ok"]
    return out


def verdict(result: dict) -> list[str]:
    """The page's and the CLI's verdict lines, computed from the result (Markdown, errors in points)."""
    eff = effect(result)
    lines = []
    if eff["plain_gap"] is not None:
        lines.append(f"Deeper plain net (plain-{eff['deep']}) ends {abs(100 * eff['plain_gap']):.1f} points "
                     f"{'above' if eff['plain_gap'] > 0 else 'below'} plain-{eff['shallow']} in training error: "
                     f"degradation {'**shown**' if eff['plain_degrades'] else '**not shown**'} (the rule: at "
                     f"least {100 * PLAIN_MARGIN:.0f} points above).")
    if eff["residual_gap"] is not None:
        gap = 100 * eff["residual_gap"]
        where = f"{abs(gap):.1f} points {'below' if gap < 0 else 'above'}" if gap else "level with"
        lines.append(f"Deeper ResNet (ResNet-{eff['deep']}) ends {where} ResNet-{eff['shallow']}: "
                     f"{'**trains at least as well**' if eff['residual_ok'] else '**trains worse**'} (the rule: at "
                     "or below the shallow net).")
    return lines


def load_result(path: str | Path) -> dict:
    """A suite result JSON, checked to be one; raises DegradationError with the reason otherwise."""

    return load_result_file(path, FORMAT, "degradation", DegradationError)


def list_results(root: str | Path | None = None, include_shipped: bool = True) -> list[dict]:
    """Saved suite results, newest first: this machine's (``<runs root>/degradation``), then the ones shipped
    with the project (``assets/degradation``, marked ``shipped: True``). Damaged files are skipped."""

    folders = [(results_dir(root), False)] + ([(ASSETS_DIR, True)] if include_shipped else [])
    return list_saved_results(folders, load_result, DegradationError)

def fig6_series(result: dict) -> list[dict]:
    """The lines of Fig. 6: one train (dashed, thin) and one test (solid, bold) line per net, error in percent.

    Each item: panel ("plain" left / "resnet" right), model, label, depth, kind ("train"/"test"),
    epochs [int], error_pct [float], dash ("dash"/"solid"), width.
    """
    series = []
    for net in result.get("nets", []):
        hist = net.get("history") or []
        for kind, dash, width in (("train", "dash", 1.5), ("test", "solid", 3.0)):
            pts = [(h["epoch"], 100 * h[f"{kind}_error"]) for h in hist
                   if h.get(f"{kind}_error") is not None and math.isfinite(h[f"{kind}_error"])]
            if not pts:
                continue
            series.append({"panel": net["family"], "model": net["model"], "label": net["label"], "depth": net["depth"],
                           "kind": kind, "epochs": [p[0] for p in pts], "error_pct": [p[1] for p in pts],
                           "dash": dash, "width": width})
    return series


def fig7_series(result: dict, when: str = "trained", quantity: str = "response_std") -> list[dict]:
    """Per-layer lines of Fig. 7 (``quantity`` "response_std") or of gradient norms ("grad_norm").

    Each item: model, label, family, depth, layers [names], layer_index [1..L], values (network order),
    sorted_values (descending, the paper's bottom panel).
    """
    if when not in ("init", "trained"):
        raise ValueError("when must be 'init' or 'trained'")
    if quantity not in ("response_std", "grad_norm"):
        raise ValueError("quantity must be 'response_std' or 'grad_norm'")
    out = []
    for net in result.get("nets", []):
        st = (net.get("stats") or {}).get(when)
        if not st:
            continue
        vals = list(st[quantity])
        out.append({"model": net["model"], "label": net["label"], "family": net["family"], "depth": net["depth"],
                    "layers": list(st["layers"]), "layer_index": list(range(1, len(vals) + 1)), "values": vals,
                    "sorted_values": sorted(vals, reverse=True)})
    return out


def table(result: dict) -> list[dict]:
    """One row per net for the final table (errors in percent)."""
    rows = []
    for n in result.get("nets", []):
        rows.append({"net": n["label"], "layers": n["depth"], "shortcuts": "yes (A)" if n["family"] == "resnet" else "no",
                     "parameters": n.get("params"), "final train error %": _round_pct(n.get("final_train_error")),
                     "final test error %": _round_pct(n.get("final_test_error")),
                     "epochs": len(n.get("history") or []), "seconds": None if n.get("seconds") is None
                     else round(n["seconds"], 1), "status": n.get("status"), "run": n.get("run_id")})
    return rows


def _round_pct(v):
    return None if v is None else round(100 * v, 2)


# -- the mechanism at initialisation (no training) --------------------------------------------------------

INIT_DEPTHS = (20, 56, 110)
INIT_SEEDS = (0, 1, 2)
INIT_IMAGES = 16


def init_signal(model, x, y) -> dict:
    """What one batch does to a freshly built net, in train mode (batch statistics, as the first SGD step).

    ``act_std``: std of the output of the stem and of every block (what the next block receives), in
    network order. ``grad_norm``: ||dL/dW|| of every 3x3 conv (stem first) for the mean cross-entropy.
    """
    import torch.nn.functional as F
    from torch import nn


    stds: list[float] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: stds.append(float(out.detach().float().std())))
               for name, m in model.named_modules() if name == "stem" or isinstance(m, BasicBlock)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        loss = F.cross_entropy(model(x), y)
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    grads = [float(c.weight.grad.norm()) for c in convs]
    model.zero_grad(set_to_none=True)
    return {"act_std": stds, "grad_norm": grads, "loss": float(loss.detach())}


def init_batch(dataset, n: int = INIT_IMAGES, seed: int = 0):
    """``n`` class-balanced training images (real CIFAR-10, no augmentation), normalised, and their labels."""
    import torch


    sub = dataset.subset(train=max(n, 10), test=10, seed=seed)
    x = normalize_batch(torch.from_numpy(np.ascontiguousarray(sub.train_x[:n])), sub.mean, sub.std)
    return x, torch.from_numpy(sub.train_y[:n]).long()


def init_profile(x, y, depths=INIT_DEPTHS, seeds=INIT_SEEDS, width: int = 16, zero_init: bool = False) -> dict:
    """``init_signal`` for plain and residual nets at each depth and seed, plus a per-layer band over seeds.

    Each net is built by ``models.build_seeded`` (a forked RNG), so a page computing this never moves
    the global RNG of a training job running in the same process. ``zero_init`` builds the residual nets
    with the last BN of every branch at gamma = 0.
    """
    import torch


    nets = []
    t0 = time.perf_counter()
    for depth in depths:
        for family in FAMILIES:
            opts = {"width": width}
            if family == "resnet":
                opts.update(shortcut="A", zero_init_residual=bool(zero_init))
            per_seed = []
            for seed in seeds:
                model = build_seeded(model_name(family, depth), int(seed), num_classes=10, **opts)
                # channels_last: ~1.3x faster convolutions on a CPU; the numbers are the same up to rounding
                model = model.to(memory_format=torch.channels_last)
                per_seed.append(init_signal(model, x.contiguous(memory_format=torch.channels_last), y))
            net = {"model": model_name(family, depth), "label": net_label(model_name(family, depth)),
                   "family": family, "depth": depth, "seeds": list(seeds),
                   "loss": [s["loss"] for s in per_seed]}
            for key in ("act_std", "grad_norm"):
                arr = np.array([s[key] for s in per_seed], dtype=float)
                net[key] = {"per_seed": arr.tolist(), "median": np.median(arr, 0).tolist(),
                            "low": arr.min(0).tolist(), "high": arr.max(0).tolist()}
            # zero-init: a branch's last conv gets exactly no gradient at step 1 (gamma = 0 blocks it), so the
            # ratios are taken over the layers that get some
            g = np.array(net["grad_norm"]["median"])
            g = g[g > 0]
            net["grad_first_over_last"] = float(g[0] / g[-1]) if g.size else None
            net["grad_max_over_min"] = float(g.max() / g.min()) if g.size else None
            net["grad_zero_layers"] = int((np.array(net["grad_norm"]["median"]) <= 0).sum())
            a = np.array(net["act_std"]["median"])
            net["act_last_over_first"] = float(a[-1] / a[0]) if a[0] > 0 else None
            nets.append(net)
    return {"depths": list(depths), "seeds": list(seeds), "images": int(len(y)), "width": width,
            "zero_init": bool(zero_init), "nets": nets, "seconds": time.perf_counter() - t0}
