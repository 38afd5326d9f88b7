"""Reading suite results (the user's and the shipped ones): the final errors, the effect of depth per family, the
verdict on the paper's claim, and the series of Figs. 6 and 7.
"""

from __future__ import annotations

import math
from pathlib import Path

from resnet_lab.experiments.degradation.suite import DegradationError, FORMAT, model_name, PLAIN_MARGIN, results_dir
from resnet_lab.runs import list_saved_results, load_result_file

ASSETS_DIR = Path(__file__).resolve().parents[3] / "assets" / "degradation"


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
