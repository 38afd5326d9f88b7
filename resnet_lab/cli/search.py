"""``python -m resnet_lab search [...] [--json]``: genetic-algorithm hyperparameter search (Optuna NSGA-II).

Starts a study, or joins it when one of that name exists in the storage: a second process (on this machine or
another) started with the same ``--storage``/``--study`` works on the same search, and all workers together run
exactly the requested number of trials. A joining worker adopts the study's stored settings (preset, population,
ranges ...); only ``--data`` and ``--device`` are its own. With ``--json`` the last line of stdout is a summary.
"""

from __future__ import annotations

import argparse

from resnet_lab.cli.common import (
    add_command,
    add_data_arg,
    device_arg,
    fail_error,
    fail_invalid,
    positive_int,
    print_json,
    QUIET_JSON_HELP,
    seed_int,
)
from resnet_lab.cli.train import CooperativeStop
from resnet_lab.data import DataError
from resnet_lab.experiments import search as S
from resnet_lab.experiments.search import SearchConfig
from resnet_lab.settings import add_arguments, flags, values_from_args


def add_parser(subparsers):
    p = add_command(
        subparsers, "search", "genetic-algorithm hyperparameter search (Optuna NSGA-II), shareable across machines",
        "Evolve the peak LR, weight decay and momentum of a training preset with a genetic algorithm (Optuna's "
        "NSGA-II sampler); fitness = test accuracy of a short run. The study lives in a database (default: a SQLite "
        "file in the runs folder), so it resumes after a restart and any number of workers can share it.",
        json_help=QUIET_JSON_HELP,
        examples=("python -m resnet_lab search                      # a small search (defaults fit the hardware)",
                  "python -m resnet_lab search --population 10 --generations 5 --prune --study lr-wd",
                  "python -m resnet_lab search --storage postgresql://lab:secret@db-host:5432/optuna --study lr-wd",
                  "    (run the same command on several machines: each one joins the same study)",
                  "python -m resnet_lab search --list"))

    g = p.add_argument_group("what to search (taken from the study when joining one)")
    add_arguments(g, SearchConfig, skip=("space",), types={k: positive_int for k in (
        "population", "generations", "trials", "epochs", "batch_size", "subset", "test_subset")})
    g.add_argument("--lr-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="peak LR range (log scale)")
    g.add_argument("--wd-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="weight decay range")
    g.add_argument("--wd-log", action=argparse.BooleanOptionalAction, default=None,
                   help="search weight decay on a log scale (needs LOW > 0)")
    g.add_argument("--momentum-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                   help="SGD momentum / Adam beta1 range")
    w = p.add_argument_group("this worker")
    w.add_argument("--storage", help="SQLAlchemy URL or a .db path (default: sqlite file runs/search.db)")
    w.add_argument("--study", help="study name (default: resnet-lab-search)")
    w.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda[:N]")
    add_data_arg(w)
    w.add_argument("--seed", type=seed_int, help="seed of this worker's GA sampler (default: random)")
    w.add_argument("--heartbeat", type=positive_int, default=30,
                   help="seconds between this worker's heartbeats; a trial silent for 2 beats is marked failed")
    p.add_argument("--list", action="store_true", help="list the studies in the storage and exit")
    return p


def _given(args) -> dict:
    given = values_from_args(args, SearchConfig, skip=("space",))
    space = {}
    if args.lr_range is not None:
        space["lr_max"] = {"low": args.lr_range[0], "high": args.lr_range[1], "log": True}
    if args.wd_range is not None or args.wd_log is not None:
        space["weight_decay"] = {}
        if args.wd_range is not None:
            space["weight_decay"].update(low=args.wd_range[0], high=args.wd_range[1])
        if args.wd_log is not None:
            space["weight_decay"]["log"] = args.wd_log
    if args.momentum_range is not None:
        space["momentum"] = {"low": args.momentum_range[0], "high": args.momentum_range[1], "log": False}
    if space:
        given["space"] = space
    return given


def _config(given: dict, base):
    d = base.to_dict()
    for k, v in given.items():
        if k == "space":
            for name, r in v.items():
                d["space"][name] = {**d["space"][name], **r}
        else:
            d[k] = v
    return SearchConfig.from_dict(d)


SPACE_FLAGS = {"lr_max": "--lr-range", "weight_decay": "--wd-range", "momentum": "--momentum-range"}


def _flag(key: str) -> str:
    return SPACE_FLAGS.get(key) or flags(SearchConfig).get(key, key)


def _given_keys(given: dict) -> set[str]:
    return (set(given) - {"space"}) | set(given.get("space", {}))


def _text(key: str, d: dict) -> str:
    if key in SPACE_FLAGS:
        r = d["space"][key]
        return f"{r['low']:g}..{r['high']:g}{' (log)' if r.get('log') else ''}"
    return "default" if d[key] is None else str(d[key])


def _conflicts(given: dict, stored) -> list[str]:
    """One line per setting the user gave that differs from the study's: what was given, what the study uses."""
    if not given:
        return []
    wanted, have = _config(given, stored).to_dict(), stored.to_dict()
    lines = []
    for key in sorted(_given_keys(given)):
        w = wanted["space"][key] if key in SPACE_FLAGS else wanted[key]
        h = have["space"][key] if key in SPACE_FLAGS else have[key]
        if w != h:
            lines.append(f"  {_flag(key)}: you gave {_text(key, wanted)}, the study uses {_text(key, have)}")
    return lines


def run(args) -> int:
    import sys

    try:
        if args.list:
            return _list_studies(S, args)
        given = _given(args)
        name = S.DEFAULT_STUDY if args.study is None else args.study
        problem = S.study_name_problem(name)
        if problem:
            raise S.SearchError(problem)
        name = name.strip()
        config = _config(given, S.default_config(cuda=_cuda(args.device)))
        problems = config.validate()
        # Probe whether the study exists first: a joining worker is judged by the study's settings, not ours.
        existing = None
        try:
            study = S.load_study(args.storage, name)
            stored = study.user_attrs.get(S.SETTINGS_ATTR)
            existing = S.SearchConfig.from_dict(stored) if stored else None
        except S.SearchError as exc:
            if "no study" not in str(exc):
                raise
        if existing is not None:
            # Invalid values are refused even when the study's settings would replace them.
            mine = _config(given, existing).validate()
            problems = {k: v for k, v in mine.items() if k in _given_keys(given)}
        fail_invalid(problems, {k: _flag(k) for k in problems}, "search settings")
        if existing is not None:
            clash = _conflicts(given, existing)
            if clash:
                sys.stderr.write(f"note: joining study '{name}', which was created with other settings; the "
                                 "study's settings win, so all workers search the same thing:\n"
                                 + "\n".join(clash) + "\n")
            config = existing
        if not args.json:
            verb = "joining" if existing is not None else "starting"
            print(f"{verb} study '{name}' in {S.mask_url(S.normalize_url(args.storage))}: preset {config.preset}, "
                  f"population {config.population}, {config.generations} generations, {config.n_trials} trials"
                  f"{', pruning on' if config.prune else ''}", flush=True)

        with CooperativeStop() as stop:
            out = S.run_search(config, storage=args.storage, study_name=name, device=args.device, data=args.data,
                               callback=_printer(args.json), stop_event=stop.event, sampler_seed=args.seed,
                               heartbeat=args.heartbeat)
    except (S.SearchError, DataError) as exc:
        # the trials' settings by this command's options (--batch-size, --lr-range); others by their message
        fail_error(exc, {k: _flag(k) for k in getattr(exc, "problems", {}) if _flag(k) != k})
    best = out.get("best")
    if not args.json:
        if best:
            p = best["params"]
            print(f"\nbest: trial {best['number']}, test accuracy {best['value']:.2%} with lr_max {p['lr_max']:.3g}, "
                  f"weight_decay {p['weight_decay']:.3g}, momentum {p['momentum']:.3f}", flush=True)
        states = ", ".join(f"{n} {k.lower()}" for k, n in out["states"].items())
        print(f"{out['status']}: study '{out['study']}' holds {out['trials']} trials ({states}); this worker ran "
              f"{sum(out['this_worker'].values())} in {out['seconds']:.0f} s", flush=True)
    print_json(out)
    return 130 if out["status"] == "stopped" else 0


def _list_studies(S, args) -> int:
    studies = S.list_studies(args.storage)
    if not args.json:
        for s in studies:
            best = f"{s['best']:.2%}" if s["best"] is not None else "—"
            states = ", ".join(f"{n} {k.lower()}" for k, n in s["states"].items())
            print(f"{s['name']:<30} {s['n_trials']:>4} trials ({states or 'none'})  best {best}  "
                  f"started {s['started']}")
        if not studies:
            print(f"no studies in {S.mask_url(S.normalize_url(args.storage))}")
    print_json(studies)
    return 0


def _printer(quiet: bool):
    """A line per finished trial (its genes and how it ended) and per log message; nothing with --json."""

    def show(event: dict) -> None:
        if quiet or event.get("type") != "log":
            return
        done = event.get("trial_done")
        if done:
            p = done["params"]
            genes = (f"lr {p['lr_max']:.2e}  wd {p['weight_decay']:.2e}  momentum {p['momentum']:.3f}"
                     if p else "")
            err = f"  ({done['error']})" if done.get("error") else ""
            print(f"{event['message']}  [generation {done['generation']}]  {genes}{err}", flush=True)
        elif "message" in event:
            print(event["message"], flush=True)

    return show


def _cuda(device: str) -> bool:
    import torch

    if str(device).startswith("cpu"):
        return False
    return torch.cuda.is_available()
