"""The one-cycle plan: LR and momentum per step (``one_cycle``), and setting them on an optimizer."""

from __future__ import annotations

import numpy as np

from resnet_lab.train.config import TrainConfig

# -- schedule ------------------------------------------------------------------------------------------


def one_cycle(config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The one-cycle policy, step by step: LR from lr_min up to lr_max at the end of epoch ``peak_epoch``, then
    linearly down to lr_min (annihilation off) or lr_min/1000 (on); momentum moves the opposite way,
    momentum_max → momentum_min at the peak → momentum_max.

    The same formula as ``torch.optim.lr_scheduler.OneCycleLR(anneal_strategy="linear", three_phase=False)``
    (the tests check they agree), computed here because OneCycleLR divides by zero when the peak falls on the
    first step — which a 1-epoch demo on a few hundred images does.
    """
    total = max(1, int(config.epochs) * int(steps_per_epoch))
    lr_min, lr_max = float(config.lr_min), float(config.lr_max)
    lr_end = lr_min / 1000.0 if config.annihilation else lr_min
    if config.lr_end is not None:
        lr_end = float(config.lr_end)
    m_hi, m_lo = float(config.momentum_max), float(config.momentum_min)
    peak = min(max(float(config.peak_epoch) * steps_per_epoch - 1.0, 0.0), total - 1.0)  # OneCycleLR's peak step
    i = np.arange(total, dtype=np.float64)
    up = np.clip(i / peak, 0.0, 1.0) if peak > 0 else np.ones(total)
    down = np.clip((i - peak) / (total - 1.0 - peak), 0.0, 1.0) if total - 1.0 > peak else np.zeros(total)
    rising = i <= peak
    lrs = np.where(rising, lr_min + (lr_max - lr_min) * up, lr_max + (lr_end - lr_max) * down)
    moms = np.where(rising, m_hi + (m_lo - m_hi) * up, m_lo + (m_hi - m_lo) * down)
    return lrs, moms


def schedule(config: TrainConfig, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """LR and momentum at every optimizer step — the exact values ``train`` sets before each step."""
    return one_cycle(config, steps_per_epoch)


def _set_lr_momentum(optimizer, lr: float, momentum: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum


