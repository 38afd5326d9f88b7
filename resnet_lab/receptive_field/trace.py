"""Building a model by name and tracing it with ``torch.fx`` (so branches are seen as they are), then running the graph
once on a zero image for every node's shape.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnet_lab import models
from resnet_lab.data import safe_text
from resnet_lab.receptive_field.table import RFError

# torchvision models the page and CLI offer by name (any torchvision.models builder works with "torchvision:NAME").
TORCHVISION_MODELS = ("vgg16", "googlenet", "resnet50", "resnet18", "resnet152", "alexnet")


# --------------------------------------------------------------------------------------------------------------------
# Building models by name


def load_model(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A registry model (``resnet20``), a torchvision one (``torchvision:vgg16``) or a student's file
    (``path/net.py:Net``), with untrained weights.

    ``device="meta"`` builds the architecture without allocating or initialising weights: enough for the
    analytic table and ~10x faster for big torchvision models.
    """
    name = str(name).strip()
    if models.is_model_file(name):  # built for real: a student's code need not run on the meta device
        try:
            return models.build(name)
        except models.ModelFileError as exc:
            raise RFError(str(exc)) from None
    with torch.device(device):
        if name.startswith("torchvision:"):
            import torchvision

            arch = name.split(":", 1)[1].strip()
            # Only registered classification builders: torchvision.models also exports helpers (get_model,
            # list_models), classes (ResNet) and weight enums that are callable but not models.
            builders = torchvision.models.list_models(module=torchvision.models)
            if arch not in builders:
                raise RFError(f"torchvision has no model builder called {safe_text(arch, 60)!r}. Valid names: "
                              + ", ".join(builders) + " (e.g. torchvision:vgg16)")
            builder = torchvision.models.get_model_builder(arch)
            kwargs = {"weights": None}
            if arch in ("googlenet", "inception_v3"):
                kwargs.update(aux_logits=False, init_weights=True)
            return builder(**kwargs)

        try:
            return models.build(name)
        except ValueError as exc:
            raise RFError(f"{exc}; or use torchvision:NAME (e.g. torchvision:vgg16)") from None


# --------------------------------------------------------------------------------------------------------------------
# Tracing


def _trace(model: nn.Module) -> tuple[Any, list[str], list[str]]:
    """fx-trace ``model``; submodules that fail to trace are retried as opaque leaves (innermost first)."""
    import torch.fx as fx

    leaves: set[str] = set()
    notes: list[str] = []

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname in leaves or super().is_leaf_module(m, qualname)

    for _ in range(64):
        tracer = Tracer()
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... for untraceable Python
            stack = [v for v in tracer.module_stack.values() if v[0]]
            culprit = next((q for q, _t in reversed(stack) if q not in leaves), None)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if culprit is None:
                raise RFError(f"torch.fx cannot trace {type(model).__name__}.forward itself ({first}). "
                              "The receptive field needs the graph; rewrite the data-dependent Python "
                              "(if/for on tensor values) in that forward.") from None
            module_type = type(model.get_submodule(culprit)).__name__
            leaves.add(culprit)
            notes.append(f"torch.fx cannot trace inside '{culprit}' ({module_type}: {first}); "
                         "it is treated as one layer and its geometry is estimated from input gradients")
            continue
        gm = fx.GraphModule(tracer.root, graph)
        gm._rf_scopes = dict(tracer.node_name_to_scope)
        return gm, sorted(leaves), notes
    raise RFError("torch.fx could not trace this model even with its submodules as opaque leaves")


def _first_param(model: nn.Module) -> torch.Tensor | None:
    param = next(iter(model.parameters()), None)
    return param if param is not None else next(iter(model.buffers()), None)


class _ModeGuard:
    """Eval mode during analysis (BN with batch 1, no aux heads), then each module's own mode back."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = [(m, m.training) for m in model.modules()]

    def __enter__(self):
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def _tensor_args(node) -> list:
    import torch.fx as fx

    found: list = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n))
    return found


def _propagate(gm, x: torch.Tensor) -> dict[str, Any]:
    """Run the graph once, keeping each node's output metadata (shape for tensors, value for small non-tensors)."""
    import torch.fx as fx

    meta: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def call_module(self, target, args, kwargs):
            # Shapes are all we need: skip running layers that cannot change them (BN on the meta device
            # goes through a slow Python decomposition; this halves the time for resnet152).
            if isinstance(self.submodules[target], _SHAPE_PRESERVING) and args \
                    and isinstance(args[0], torch.Tensor) and len(args) == 1 and not kwargs:
                return args[0]
            return super().call_module(target, args, kwargs)

        def run_node(self, n):
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailure(n, exc) from exc
            meta[n.name] = result if not isinstance(result, torch.Tensor) else _TensorMeta(result)
            if isinstance(result, torch.Tensor) and result.dim() == 4 and 0 in result.shape[2:]:
                raise _NodeFailure(n, RuntimeError(f"output size {tuple(result.shape[2:])}"))
            return result

    with torch.no_grad():
        Recorder(gm).run(x)
    return meta


_SHAPE_PRESERVING = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU,
                     nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d,
                     nn.GroupNorm, nn.LocalResponseNorm)


class _TensorMeta:
    __slots__ = ("shape", "dim")

    def __init__(self, t: torch.Tensor) -> None:
        self.shape = tuple(t.shape)
        self.dim = t.dim()


class _NodeFailure(Exception):
    def __init__(self, node, exc: Exception) -> None:
        super().__init__(str(exc))
        self.node, self.exc = node, exc
