"""The course assignment, checked: each requirement as pass / fail / unknown with what was measured.

The assignment: write ``custom_resnet.py`` (PrepLayer 64 → Layer1 128 + ResBlock → Layer2 256 → Layer3 512 +
ResBlock → MaxPool 4 → FC → 10 classes), find LR min/max with a range test, train 24 epochs of one-cycle (peak at
epoch 5, no annihilation, batch 512, Adam, cross-entropy, crop 32 after pad 4 → flip → cutout 8×8) and reach 90 %.

The architecture is read off the traced graph (``resnet_lab.receptive_field``: every conv, pool and residual add
with its channels and feature-map size), so it works on a network written any way — modules or ``F.relu``, adds in
``forward`` or in a block — and says *unknown* (never *pass*) where the graph cannot be traced. The training part
is read from a run's stored config, the accuracy from its stored metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from resnet_lab import models
from resnet_lab.models.files import OUTPUT_NOTES
from resnet_lab.receptive_field import receptive_fields, RFError

TARGET = 0.90
JPEG_GAP = 0.034  # ../shared/data/README.md: the JPEG re-encode reads about 3.4 points lower than the original
# stage -> (channels, feature-map side at 32x32 input, a residual add there?)
STAGES = {"PrepLayer": (64, 32, False), "Layer1": (128, 16, True), "Layer2": (256, 8, False),
          "Layer3": (512, 4, True)}
TRAINING = {"epochs": 24, "peak_epoch": 5, "annihilation": False, "batch_size": 512, "optimizer": "adam",
            "loss": "cross_entropy", "label_smoothing": 0.0, "augment": True, "crop_pad": 4, "flip": "random",
            "cutout": 8}
MARK = {"pass": "✔", "fail": "✘", "unknown": "?", "info": "·"}


@dataclass
class Item:
    group: str          # architecture | training | accuracy
    requirement: str
    status: str         # pass | fail | unknown | info
    measured: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def line(self) -> str:
        return f"{MARK[self.status]} {self.requirement}: {self.measured}" + (f" — {self.note}" if self.note else "")


def _status(ok: bool | None) -> str:
    return "unknown" if ok is None else "pass" if ok else "fail"


def check_network(model: nn.Module, num_classes: int = 10) -> list[Item]:
    """The architecture requirements, measured on ``model`` (its traced graph at 32x32, one forward pass)."""
    items: list[Item] = []
    try:
        table = receptive_fields(model, 32)
        rows = table.layers
    except RFError as exc:
        rows = None
        items.append(Item("architecture", "the graph can be read", "unknown", "no",
                          f"{exc}; the stage checks below are unknown"))
    convs = [r for r in rows or [] if r.op == "conv"]
    adds = [r for r in rows or [] if r.op == "add"]
    for stage, (channels, side, residual) in STAGES.items():
        if rows is None:
            items.append(Item("architecture", f"{stage}: {channels} channels at {side}×{side}", "unknown", "?"))
            if residual:
                items.append(Item("architecture", f"{stage} + ResBlock: a residual add at {channels} channels",
                                  "unknown", "?"))
            continue
        # a stage's width is that of a feature map at its size (its conv runs before the pooling in the
        # assignment's conv -> max-pool -> BN -> ReLU, so the pooled map, not the conv, sits at the stage's size)
        widths = sorted({r.channels for r in rows if r.out_size == (side, side) and r.channels and r.op != "input"})
        ok = channels in widths if stage != "PrepLayer" else bool(convs) and convs[0].channels == channels \
            and convs[0].out_size == (side, side)
        shown = (f"first conv: {convs[0].channels} channels at {_side(convs[0])}" if stage == "PrepLayer" and convs
                 else f"feature maps at {side}×{side}: {', '.join(map(str, widths)) or 'none'} channels")
        items.append(Item("architecture", f"{stage}: {channels} channels at {side}×{side}", _status(ok), shown))
        if residual:
            here = [r for r in adds if r.out_size == (side, side) and r.channels == channels]
            items.append(Item("architecture", f"{stage} + ResBlock: a residual add at {channels} channels",
                              _status(bool(here)), f"{len(here)} add(s) at {side}×{side}, {channels} channels"))
    if rows is None:
        items += [Item("architecture", "two residual adds in all", "unknown", "?"),
                  Item("architecture", "MaxPool with kernel 4 → 1×1", "unknown", "?")]
    else:
        items.append(Item("architecture", "two residual adds in all", _status(len(adds) == 2),
                          f"{len(adds)} add(s)" + (f" ({', '.join(r.name for r in adds)})" if adds else "")))
        pools = [r for r in rows if r.op == "pool" and r.kernel == (4, 4) and r.out_size == (1, 1)]
        items.append(Item("architecture", "MaxPool with kernel 4 → 1×1", _status(bool(pools)),
                          pools[0].name if pools else "no 4×4 pooling to 1×1 found"))
    items.extend(_head(model, num_classes))
    return items


def _side(row) -> str:
    return f"{row.out_size[0]}×{row.out_size[1]}" if row.out_size else "-"


def _head(model: nn.Module, num_classes: int) -> list[Item]:
    """FC to the classes, what the network returns, and its size."""
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    last = fcs[-1] if fcs else None
    out = [Item("architecture", f"FC to {num_classes} classes", _status(bool(last and last.out_features == num_classes)),
                f"nn.Linear({last.in_features}, {last.out_features}{', bias=False' if last.bias is None else ''})"
                if last else "no nn.Linear layer")]
    kind = getattr(model, "output_kind", "logits")
    out.append(Item("architecture", "returns scores for cross-entropy", "fail" if kind == "probs" else "pass",
                    {"logits": "logits", "log_probs": "log-probabilities (log_softmax)",
                     "probs": "probabilities (softmax)"}[kind], OUTPUT_NOTES.get(kind, "")))
    reference = models.param_count("custom_resnet", num_classes)
    n = models.count_params(model)
    out.append(Item("architecture", "parameters", "info", f"{n:,}",
                    f"the lab's custom_resnet has {reference:,}"))
    return out


def check_training(config: dict) -> list[Item]:
    """The training requirements, read from a run's config."""
    items = []
    words = {"epochs": "24 epochs", "peak_epoch": "LR peak at epoch 5", "annihilation": "no annihilation",
             "batch_size": "batch size 512", "optimizer": "Adam", "loss": "cross-entropy loss",
             "label_smoothing": "no label smoothing"}
    for key, text in words.items():
        value = config.get(key)
        ok = None if value is None else (value == TRAINING[key] if not isinstance(value, float)
                                         else abs(value - TRAINING[key]) < 1e-9)
        items.append(Item("training", text, _status(ok), "not recorded" if value is None else f"{value}"))
    chain = (f"pad {config.get('crop_pad')} → crop 32 → {config.get('flip')} flip → cutout "
             f"{config.get('cutout')}×{config.get('cutout')}" if config.get("augment") else "no augmentation")
    ok = all(config.get(k) == TRAINING[k] for k in ("augment", "crop_pad", "flip", "cutout"))
    items.append(Item("training", "augmentation: pad 4 → crop 32 → flip → cutout 8×8, in that order", _status(ok),
                      chain, "the trainer applies them in this order"))
    lr = (config.get("lr_min"), config.get("lr_max"))
    items.append(Item("training", "LR min/max from a range test", "info",
                      f"LR {lr[0]:g} → {lr[1]:g}" if None not in lr else "not recorded",
                      "the LR Finder hands its pick to the Train page; a run started there records it"))
    return items


def check_accuracy(metrics: dict, config: dict) -> Item:
    top1 = metrics.get("top1")
    source = str(config.get("data_source") or config.get("data") or "")
    jpeg = "jpeg" in source.lower()
    note = (f"on the JPEG re-encode, which reads about {100 * JPEG_GAP:.1f} points lower than the original CIFAR-10: "
            f"{TARGET - JPEG_GAP:.1%} here is about {TARGET:.0%} there" if jpeg else "")
    if top1 is None:
        return Item("accuracy", f"test accuracy ≥ {TARGET:.0%}", "unknown", "no test accuracy stored", note)
    return Item("accuracy", f"test accuracy ≥ {TARGET:.0%}", _status(top1 >= TARGET), f"{top1:.2%}", note)


def check_run(run) -> list[Item]:
    """Every requirement for a finished run: its network rebuilt from the run, its config and its metrics."""
    model = run.load_model("cpu")  # a network from a file is rebuilt from the run's copy, with its output kind
    return (check_network(model, len(run.classes or range(10))) + check_training(run.config)
            + [check_accuracy(run.metrics or {}, run.config)])


def summary(items: list[Item]) -> dict:
    counts = {s: sum(i.status == s for i in items) for s in MARK}
    return {"passed": counts["pass"], "failed": counts["fail"], "unknown": counts["unknown"],
            "items": [i.to_dict() for i in items]}
