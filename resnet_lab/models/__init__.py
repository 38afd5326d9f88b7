"""The model registry: every network in the lab is built by name through ``build``.

    build("resnet20", shortcut="B")      # an nn.Module returning (N, num_classes) logits
    list_models(), model_info("resnet20"), param_count("resnet20")
    count_params(model), summary(model, (1, 3, 32, 32))

A built model carries ``registry_name``, ``num_classes`` and ``build_options`` (every option, defaults
filled in, JSON-safe), so ``build(m.registry_name, num_classes=m.num_classes, **m.build_options)`` rebuilds
the same architecture even if a default changes later.
torchinfo is imported inside ``summary`` only: training needs torch alone.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from resnet_lab.models import cifar_resnet, custom, files, resnet, speed
from resnet_lab.models.files import is_spec as is_model_file
from resnet_lab.models.files import ModelFileError

__all__ = ["build", "build_seeded", "list_models", "model_info", "param_count", "count_params", "summary", "SummaryRows",
           "model_problem", "is_model_file", "ModelFileError", "output_kind"]


@dataclass(frozen=True)
class Option:
    default: Any
    choices: tuple
    help: str


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    family: str
    description: str
    paper: str
    options: dict[str, Option] = field(default_factory=dict)


_INPLACE = Option(False, (False, True),
                  "in-place ReLUs: less memory, but breaks full backward hooks (keep False for Grad-CAM)")
_SHORTCUT = Option("A", cifar_resnet.SHORTCUTS,
                   "A: free identity, zero-padded where width grows (paper default); "
                   "B: learned 1x1 projection only where shape changes; C: projection on every block")
_WIDTH = Option(16, cifar_resnet.WIDTHS,
                "filters in the first stage (then 2x and 4x); the paper: 16. Narrower nets train faster on a CPU")
_ZERO_INIT = Option(False, (False, True),
                    "start the last BN of each residual branch at gamma = 0, so every block is the identity at "
                    "initialisation (Goyal et al. 2017)")
_STEM = Option("cifar", resnet.STEMS,
               "cifar: 3x3 conv, keeps 32x32 resolution; imagenet: 7x7 stride-2 conv + max-pool, for 224 px")

_HE2015 = "He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385)"
_HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks (arXiv:1603.05027)"

_REGISTRY: dict[str, _Entry] = {
    "custom_resnet": _Entry(
        custom.custom_resnet, "assignment",
        "The assignment net: 4 conv layers that shrink the image with max-pooling, "
        "plus a residual block after the 1st and 3rd.",
        "course assignment (fast CIFAR-10 ResNet)", {"inplace_relu": _INPLACE}),
}

_CIFAR_BLOCKS = {8: 1, 14: 2, 20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
for _depth, _n in _CIFAR_BLOCKS.items():
    _REGISTRY[f"resnet{_depth}"] = _Entry(
        functools.partial(cifar_resnet.CifarResNet, _depth), "resnet-cifar",
        (f"The paper's {_depth}-layer CIFAR ResNet" if _depth >= 20 else
         f"A {_depth}-layer CIFAR ResNet (shallower than the paper's)")
        + f": 3 stages of {_n} two-conv residual block{'s' if _n > 1 else ''} (16/32/64 filters).",
        _HE2015, {"shortcut": _SHORTCUT, "width": _WIDTH, "zero_init_residual": _ZERO_INIT})
for _depth, _n in _CIFAR_BLOCKS.items():
    _REGISTRY[f"plain{_depth}"] = _Entry(
        functools.partial(cifar_resnet.CifarResNet, _depth, shortcut=None), "plain-cifar",
        f"resnet{_depth} with its shortcuts removed: same layers and weights, no skip connections "
        "(deeper plain nets train worse).",
        _HE2015, {"width": _WIDTH})

_IMAGENET_CONFIGS = {
    18: ("basic", "2-2-2-2"), 34: ("basic", "3-4-6-3"),
    50: ("bottleneck", "3-4-6-3"), 101: ("bottleneck", "3-4-23-3"), 152: ("bottleneck", "3-8-36-3"),
}
_BLOCKS = {("basic", False): resnet.BasicBlock, ("bottleneck", False): resnet.Bottleneck,
           ("basic", True): resnet.PreActBasicBlock, ("bottleneck", True): resnet.PreActBottleneck}


def _imagenet_builder(kind: str, config: str, preact: bool):
    return functools.partial(resnet.ResNet, _BLOCKS[kind, preact], [int(n) for n in config.split("-")])

_BLOCK_WORDS = {"basic": "two-conv basic blocks", "bottleneck": "1x1-3x3-1x1 bottleneck blocks"}
for _depth, (_kind, _config) in _IMAGENET_CONFIGS.items():
    _REGISTRY[f"resnet{_depth}"] = _Entry(
        _imagenet_builder(_kind, _config, preact=False), "resnet",
        f"ResNet-{_depth}: 4 stages of {_config} {_BLOCK_WORDS[_kind]} (64 to 512 filters).",
        _HE2015, {"stem": _STEM})
for _depth, (_kind, _config) in _IMAGENET_CONFIGS.items():
    _REGISTRY[f"preact_resnet{_depth}"] = _Entry(
        _imagenet_builder(_kind, _config, preact=True), "preact-resnet",
        f"Pre-activation ResNet-{_depth} ({_config}): BN and ReLU come before each conv, "
        "so the shortcut path stays a clean identity.",
        _HE2016, {"stem": _STEM})
_REGISTRY["speednet"] = _Entry(
    speed.speednet, "speed",
    "The speed preset's net: a data-whitened 2x2 stem and three wide conv groups (64/256/256), no shortcuts, "
    "built for seconds-to-accuracy on a GPU.",
    "the ideas of Jordan 2024, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU (arXiv:2404.00498)",
    {"whiten": Option(True, (True, False),
                      "whiten: first layer set from the data's 2x2 patch covariance and frozen; "
                      "False: an ordinary trained conv (the ablation's 'off')")})


def list_models() -> list[str]:
    """Registered names, in a teaching order: assignment, CIFAR resnets, plain twins, ImageNet-style, v2."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def _describe_options(entry: _Entry) -> str:
    if not entry.options:
        return "none"
    return "; ".join(f"{key} in {list(opt.choices)} (default {opt.default!r})" for key, opt in entry.options.items())


def _resolve(name: str, num_classes: int, options: dict[str, Any]) -> tuple[_Entry, dict[str, Any]]:
    entry = _entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number >= 1; got {num_classes!r}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(f"{name} does not accept option(s) {', '.join(unknown)}; "
                         f"accepted options: {_describe_options(entry)}")
    resolved = {key: opt.default for key, opt in entry.options.items()}
    for key, value in options.items():
        opt = entry.options[key]
        # Type check too: 1 == True would otherwise slip through as a bool choice.
        if type(value) is not type(opt.default) or value not in opt.choices:
            raise ValueError(f"{name}: option {key} must be one of {list(opt.choices)}; got {value!r}")
        resolved[key] = value
    return entry, resolved


def build(name: str, num_classes: int = 10, **options: Any) -> nn.Module:
    """Build a registered model with fresh (Kaiming) weights; raises ValueError for bad names/options. A name
    ``path/to/file.py:Class`` (or ``module.path:Class``) builds the class a student wrote (``models.files``:
    running the file runs its code); ``options`` are then its constructor's arguments."""
    if files.is_spec(name):
        return files.build(name, num_classes, options)
    entry, resolved = _resolve(name, num_classes, options)
    model = entry.builder(num_classes=num_classes, **resolved)
    model.registry_name = name
    model.num_classes = num_classes
    model.build_options = resolved
    return model


_SEEDED_BUILD = threading.Lock()


def build_seeded(name: str, seed: int, num_classes: int = 10, **options: Any) -> nn.Module:
    """``build`` with the initial weights of ``torch.manual_seed(seed)``, without touching the global RNG: the
    draw happens in a forked RNG under one lock, so a page or job building a model never moves the random state
    of another one running in the same process, and two builds never interleave their draws."""
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(name, num_classes=num_classes, **options)


def param_count(name: str, num_classes: int = 10, **options: Any) -> int:
    """Parameter count without allocating weights (built on the meta device): cheap even for resnet152. A model
    file is built for real (its code may not run on the meta device)."""
    if files.is_spec(name):
        return count_params(files.build(name, num_classes, options))
    _, resolved = _resolve(name, num_classes, options)
    return _meta_param_count(name, num_classes, tuple(sorted(resolved.items())))


@functools.lru_cache(maxsize=256)
def _meta_param_count(name: str, num_classes: int, options: tuple) -> int:
    # The device context is thread-local, so a training job in another thread is unaffected.
    with torch.device("meta"):
        model = _REGISTRY[name].builder(num_classes=num_classes, **dict(options))
    return count_params(model)


def model_problem(name: str, num_classes: int = 10, options: dict | None = None) -> str | None:
    """Why ``name`` cannot be built (None when it can): an unknown registry name, or what is wrong with a model
    file (read, run and checked on a 32x32 batch)."""
    if files.is_spec(name):
        return files.problem(name, num_classes, options)
    if name not in _REGISTRY:
        return f"unknown model '{name}'"
    return None


def output_kind(name: str, options: dict | None = None) -> str:
    """What a model returns: ``logits`` for every registry model; for a model file what its forward gives
    (``models.files.output_kind``: logits, log_probs or probs; ``unknown`` where files may not run)."""
    if files.is_spec(name):
        if not files.may_run_here():
            return "unknown"
        return files.build(name, 10, options).output_kind
    return "logits"


def model_info(name: str) -> dict:
    """What a model is, for tables and pickers: family, one-line description, input size, options."""
    if files.is_spec(name):
        source = files.read(name)
        doc = (files.load_class(source).__doc__ or "").strip().split("\n")[0]
        return {"name": name, "family": "your file", "description": doc or f"the network {source.short}",
                "paper": "", "input_size": (3, 32, 32), "options": {}, "sha256": source.sha256}
    entry = _entry(name)
    return {
        "name": name,
        "family": entry.family,
        "description": entry.description,
        "paper": entry.paper,
        "input_size": (3, 32, 32),
        "options": {key: {"default": opt.default, "choices": list(opt.choices), "help": opt.help}
                    for key, opt in entry.options.items()},
    }


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class SummaryRows(list):
    """``summary``'s rows (a plain list of dicts) plus ``totals`` (dict) and ``text`` (torchinfo's table)."""

    totals: dict
    text: str


def summary(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> SummaryRows:
    """One row per module call: name, type, depth, output_shape, params, params_total, macs.

    ``params`` counts only the module's own weights (so the rows sum to the model's total) and
    ``params_total`` includes its children; ``macs`` (multiply-accumulates for the whole batch) is
    given for leaf layers. Runs one no-grad forward pass in eval mode on the model's own device,
    then restores train/eval mode, so running BN statistics are untouched.
    """
    import torchinfo

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    stats = torchinfo.summary(model, input_size=tuple(input_size), device=device, verbose=0, depth=4,
                              col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    names = {id(m): n for n, m in model.named_modules()}
    rows = SummaryRows()
    for layer in stats.summary_list:
        if layer.depth == 0:
            continue
        own = 0
        if not layer.is_recursive:
            own = layer.num_params if layer.is_leaf_layer else layer.leftover_params()
        rows.append({
            "name": names.get(id(layer.module), layer.var_name),
            "type": layer.class_name,
            "depth": layer.depth,
            "output_shape": list(layer.output_size),
            "params": int(own),
            "params_total": int(layer.num_params),
            "macs": int(layer.macs) if layer.is_leaf_layer else 0,
        })
    rows.totals = {
        "params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "macs": int(stats.total_mult_adds),
        "input_size": list(input_size),
        "output_shape": rows[-1]["output_shape"] if rows else [],
        "param_mb": stats.total_param_bytes / 1e6,
        "forward_backward_mb": stats.total_output_bytes / 1e6,
    }
    rows.text = str(stats)
    return rows
