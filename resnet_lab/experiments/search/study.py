"""Reading a study back: its trials as rows, a summary, and the winner's genes handed to the Train page."""

from __future__ import annotations

from resnet_lab.experiments.search.space import SearchConfig, SearchError, SETTINGS_ATTR, trial_config
from resnet_lab.experiments.search.storage import mask_url, normalize_url, open_storage

# -- reading a study ------------------------------------------------------------------------------------


def load_study(storage: str | None, study_name: str):
    import optuna

    st = open_storage(storage, heartbeat=None, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        raise SearchError(f"no study '{study_name}' in {mask_url(normalize_url(storage))}") from None


def trial_rows(study) -> list[dict]:
    """One plain dict per trial (for tables, plots and tests), in trial-number order.

    ``value`` is the fitness (final test accuracy) of COMPLETE trials, or the last reported accuracy of a pruned
    one; ``generation`` = number // population (launch batch); ``ga_generation`` is the generation NSGA-II itself
    assigned (it counts only completed trials, so pruned/failed trials push later ones back).
    """
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        inter = dict(sorted(t.intermediate_values.items()))
        value = t.value if t.value is not None else (inter[max(inter)] if inter else None)
        rows.append({"number": t.number, "state": t.state.name, "value": value, "params": dict(t.params),
                     "generation": t.user_attrs.get("generation"),
                     "ga_generation": t.system_attrs.get("NSGAIISampler:generation"),
                     "worker": t.user_attrs.get("worker"), "run_id": t.user_attrs.get("run_id"),
                     "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error"),
                     "intermediate": {int(k): float(v) for k, v in inter.items()},
                     "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None})
    return rows


def summary(study) -> dict:
    rows = trial_rows(study)
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    settings = study.user_attrs.get(SETTINGS_ATTR)
    return {"study": study.study_name, "settings": settings, "trials": len(rows), "states": states,
            "best": best, "requested": SearchConfig.from_dict(settings).n_trials if settings else None}


def train_prefill(best: dict, settings: dict) -> dict:
    """What the Train page needs to rerun the winner: the genes plus the preset's optimizer and model."""
    cfg = SearchConfig.from_dict(settings)
    p = best["params"]
    # lr_min / momentum_min: what trial_config derived from the genes, so the Train page reruns the same schedule.
    tc = trial_config(cfg, p)
    return {"lr_max": float(p["lr_max"]), "weight_decay": float(p["weight_decay"]),
            "momentum_max": float(p["momentum"]), "optimizer": tc.optimizer, "model": tc.model,
            "lr_min": float(tc.lr_min), "momentum_min": float(tc.momentum_min), "preset": cfg.preset,
            "source": f"the search (trial {best.get('number')})"}
