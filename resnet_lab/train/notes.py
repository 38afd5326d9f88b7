"""What the Train page and the CLI say about each preset: the idea in words, the recipe read off the preset itself
and the figures measured for it, read from ``assets/presets/<preset>.json`` (written by
``benchmarks/bench_presets.py``). No figure is typed here: a preset that changes, or a new measurement, changes the
note by itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

from resnet_lab.models import param_count
from resnet_lab.train.config import PRESETS

MEASURED_DIR = Path(__file__).resolve().parents[2] / "assets" / "presets"
FORMAT = "resnet_lab.preset-measurement/1"

# the idea of each preset, in words (its numbers come from PRESETS and the measurements)
ABOUT = {
    "assignment": "The course assignment: the custom ResNet (PrepLayer → Layer1 + ResBlock → Layer2 → Layer3 + "
                  "ResBlock → MaxPool → FC) with the one-cycle policy. Made for a GPU: on a CPU it takes hours.",
    "quick-cpu": "A demo sized for a CPU, not a real result: the paper's smallest ResNet on a class-balanced subset, "
                 "a few epochs.",
    "speed": "Every trick of the public CIFAR-10 speed record (airbench): a small whitened net, label smoothing, "
             "lookahead, alternating flips, flip + shift test-time averaging, fp16. Made for a GPU; on a CPU use "
             "quick-cpu.",
    "paper-resnet20": "He et al.'s CIFAR recipe for ResNet-20 (SGD, momentum, weight decay, batch 128), with a "
                      "one-cycle schedule in place of the paper's ~180 epochs of step decays.",
}


def _params(model: str) -> int | None:
    try:
        return param_count(model)  # built on the meta device, cached by the registry
    except Exception:  # a model that cannot be built here (an optional dependency) just goes without the count
        return None


def recipe(name: str) -> str:
    """The preset's recipe in one line, read off ``PRESETS[name]``."""
    p = PRESETS[name]
    params = _params(p["model"])
    parts = [f"{p['model']}" + (f" ({params / 1e6:.2f} M parameters)" if params else ""),
             f"{p['epochs']} epochs, LR peak at epoch {p['peak_epoch']:g}"
             + ("" if p.get("annihilation", True) else ", no annihilation"),
             f"{p['optimizer']}{' with Nesterov momentum' if p.get('nesterov') else ''}, batch {p['batch_size']}"]
    if p.get("augment", True):
        cutout, flip = p.get("cutout", 8), p.get("flip", "random")
        parts.append(f"crop (pad {p.get('crop_pad', 4)} px)" + ("" if flip == "none" else f" + {flip} flips")
                     + (f" + {cutout}×{cutout} cutout" if cutout else ""))
    if p.get("subset"):
        test = p.get("test_subset")
        parts.append(f"{p['subset']:,} training / {f'{test:,}' if test else 'all'} test images")
    return ", ".join(parts)


def measured(name: str) -> dict | None:
    """The stored measurement of a preset (None when there is none or it cannot be read)."""
    try:
        out = json.loads((MEASURED_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    runs = out.get("runs") if isinstance(out, dict) and out.get("format") == FORMAT else None
    ok = isinstance(runs, list) and runs and all(
        isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k])
                                    for k in ("top1", "seconds")) for r in runs)
    return out if ok else None


def measured_text(m: dict) -> str:
    """One sentence of a measurement: the spread of top-1 and of wall time over its runs, where and how."""
    top1 = sorted(100 * r["top1"] for r in m["runs"])
    seconds = sorted(r["seconds"] for r in m["runs"])
    acc = f"{top1[0]:.1f}%" if len(top1) == 1 else f"{top1[0]:.1f}–{top1[-1]:.1f}%"
    unit, scale, fmt = ("s", 1, ".0f") if seconds[-1] < 90 else ("min", 60, ".1f")  # the unit of the longest run
    low, high = (format(v / scale, fmt) for v in (seconds[0], seconds[-1]))
    took = f"{high} {unit}" if low == high else f"{low}–{high} {unit}"
    runs = f"{len(top1)} run{'s' if len(top1) > 1 else ''} (seeds {', '.join(str(r.get('seed')) for r in m['runs'])})"
    return (f"Measured on {m.get('hardware', 'an unnamed machine')}, {m.get('date', 'undated')}: {acc} test "
            f"accuracy in {runs}, {took} each, with `{m.get('command', '?')}`"
            + (f" ({m['data']})" if m.get("data") else "") + ".")


def preset_note(name: str) -> str:
    """The idea, the recipe and what was measured (or how to measure it) for a preset."""
    if name not in PRESETS:
        return ""
    m = measured(name)
    tail = measured_text(m) if m else (f"Not measured yet: `python benchmarks/bench_presets.py --preset {name}` "
                                       "writes its figures here.")
    return f"{ABOUT.get(name, '')} Recipe: {recipe(name)}. {tail}".strip()


def preset_table() -> str:
    """docs/training.md's preset table (scripts/docs_generated.py): what each preset is, its recipe and figures."""
    rows = ["| preset | what | recipe | measured |", "|---|---|---|---|"]
    for name in PRESETS:
        m = measured(name)
        figures = measured_text(m) if m else f"not yet: `python benchmarks/bench_presets.py --preset {name}`"
        rows.append(f"| `{name}` | {ABOUT.get(name, '')} | {recipe(name)} | {figures} |")
    return "\n".join(rows)
