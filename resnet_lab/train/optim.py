"""The one optimizer factory and its parameter groups (batch-norm parameters at their own LR scale), and
lookahead (the speed recipe's slow weights)."""

from __future__ import annotations

import torch

from resnet_lab.train.config import LOOKAHEAD_EVERY, OPTIMIZERS, TrainConfig


def _param_groups(config: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """One group, or with ``bias_lr_scale`` != 1 two: batch-norm parameters get LR x scale and weight decay
    / scale, so their decay per step (LR x decay) stays that of the other weights while they move faster."""
    params = list(model.parameters())  # frozen ones too: a model may unfreeze (or freeze) some per epoch
    if config.bias_lr_scale == 1.0:
        return [{"params": params}]
    norm_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                for p in m.parameters(recurse=False)}
    norm = [p for p in params if id(p) in norm_ids]
    rest = [p for p in params if id(p) not in norm_ids]
    scale = float(config.bias_lr_scale)
    return [{"params": rest, "lr_scale": 1.0},
            {"params": norm, "lr_scale": scale, "weight_decay": config.weight_decay / scale}]


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   fused: bool = False, nesterov: bool = False):
    """The one optimizer factory (the trainer and the LR test both use it): SGD (momentum, optionally Nesterov),
    Adam or AdamW, with ``momentum`` as SGD's momentum or Adam's beta1. ``fused=True`` (CUDA): one kernel updates
    every parameter instead of a few per tensor."""
    extra = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=bool(nesterov and momentum > 0), **extra)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, **extra)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def _make_optimizer(config: TrainConfig, params, fused: bool = False):
    # the LR and momentum given here are overwritten before every step by the one-cycle plan
    return make_optimizer(config.optimizer, params, config.lr_min, config.momentum_max, config.weight_decay,
                          fused=fused, nesterov=config.nesterov)


def _current_lr_momentum(optimizer) -> tuple[float, float]:
    group = optimizer.param_groups[0]
    mom = group["betas"][0] if "betas" in group else group.get("momentum", 0.0)
    return float(group["lr"]), float(mom)



class _Lookahead:
    """Lookahead (Zhang et al. 2019) as the speed recipe uses it: every ``LOOKAHEAD_EVERY`` steps the slow
    copy moves towards the fast weights, ``slow = d*slow + (1-d)*fast``, and the fast weights restart from it.
    ``d`` grows as (step/total)^3 (at most 0.95^5): no averaging early, when the weights must move, and a
    long average at the end, where it acts like weight averaging. The run ends on the slow weights."""

    def __init__(self, model: torch.nn.Module, total_steps: int) -> None:
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]  # BN statistics too
        self.slow = [t.detach().clone() for t in self.tensors]
        self.total = max(1, total_steps)

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step % LOOKAHEAD_EVERY == 0:
            self._sync(0.95 ** 5 * (step / self.total) ** 3)

    @torch.no_grad()
    def finish(self) -> None:
        self._sync(1.0)

    def _sync(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.tensors, 1.0 - decay)
        torch._foreach_copy_(self.tensors, self.slow)
