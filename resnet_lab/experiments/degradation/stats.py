"""What the paper's Fig. 7 plots and what explains it: per-layer response and gradient statistics of a net, after
training or at initialisation (no training), where the plain nets' gradients already fade with depth.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from resnet_lab.events import Hook
from resnet_lab.experiments.degradation.suite import FAMILIES, model_name, net_label, STATS_IMAGES
from resnet_lab.models import build_seeded
from resnet_lab.models.resnet import BasicBlock
from resnet_lab.transforms import normalize_batch

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
