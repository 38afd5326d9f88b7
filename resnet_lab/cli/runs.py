"""``python -m resnet_lab runs [--json] [--delete ID ...] [--compare ID ID ...]``: the saved training runs."""

from __future__ import annotations

import math

from resnet_lab.cli.common import fail, print_json, shown
from resnet_lab.runs import RunError, RunStore


def add_parser(subparsers):
    p = subparsers.add_parser("runs", help="list, compare or delete saved training runs",
                              description="List the runs in $RESNET_LAB_RUNS (./runs), newest first; compare "
                                          "several side by side (final numbers and test accuracy per epoch); delete.")
    p.add_argument("--delete", nargs="+", metavar="ID", help="delete these runs (their folders)")
    p.add_argument("--force", action="store_true",
                   help="with --delete: also delete a run that reads 'running' but whose process cannot be checked "
                        "from here (started on another machine, or before start times were recorded); a run whose "
                        "process runs on this machine is never deleted")
    p.add_argument("--compare", nargs="+", metavar="ID", help="compare these runs")
    p.add_argument("--recover", nargs="+", metavar="ID",
                   help="rewrite the damaged files of these runs from what is intact (metrics from predictions); "
                        "a run left 'running' by a process that is gone or on another machine is marked interrupted, "
                        "keeping its files")
    p.add_argument("--json", action="store_true", help="print one JSON value as the last line")
    return p


def _number(value) -> bool:
    # hand-edited or damaged files may hold "fast", null or NaN where a number belongs: shown as "-"
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value) -> str:
    return f"{value:.2%}" if _number(value) else "-"


def _secs(value) -> str:
    return f"{value:.1f}" if _number(value) else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(args) -> int:
    store = RunStore()
    try:
        store.check_root()  # RESNET_LAB_RUNS naming a file is an error, not "no runs yet"
        if args.force and not args.delete:
            fail("--force goes with --delete ID ...")
        if args.recover:
            return _each(args, store.recover, args.recover, "recovered",
                         lambda rid, done: f"{rid}: " + ("; ".join(done) if done else "not damaged, nothing to do"))
        if args.delete:
            return _each(args, lambda rid: _delete(store, rid, args.force), args.delete, "deleted",
                         lambda rid, _: f"deleted {rid}")
        if args.compare:
            return _compare(args, store.compare(args.compare))
    except RunError as exc:
        fail(str(exc))
    return _list(args, store)


def _delete(store, run_id: str, force: bool) -> None:
    run = store.get(run_id, allow_damaged=True)
    if run.status == "running" and run.unverified and not force:
        # the library says the same without the CLI's words
        fail(f"run {run_id} is marked running by {shown(run.unverified)}. If it is not training any more, "
             f"`runs --delete {run_id} --force` deletes it, or `runs --recover {run_id}` marks it interrupted and "
             "keeps what it has")
    store.delete(run_id, force=force)


def _each(args, action, run_ids: list[str], verb: str, line) -> int:
    """Apply ``action`` to each run id in turn; the first RunError stops (main prints it, exit 2)."""
    done = {}
    for rid in run_ids:
        done[rid] = action(rid)
        if not args.json:
            print(line(rid, done[rid]))
    if args.json:
        print_json({verb: done if verb == "recovered" else list(done)})
    return 0


def _compare(args, rows: list[dict]) -> int:
    if args.json:
        print_json(rows)
        return 0
    table = [["", *[r["run"] for r in rows]]]
    for key in ("model", "preset", "status", "optimizer", "lr_max", "batch_size", "n_train", "seed", "epochs"):
        table.append([key, *[shown(r[key]) if r[key] is not None else "-" for r in rows]])
    table.append(["top-1", *[_pct(r["top1"]) for r in rows]])
    table.append(["top-5", *[_pct(r["top5"]) for r in rows]])
    table.append(["seconds", *[_secs(r["seconds"]) for r in rows]])
    for e in range(max(len(r["test_acc"]) for r in rows)):
        table.append([f"epoch {e + 1} test", *[_pct(r["test_acc"][e]) if e < len(r["test_acc"]) else ""
                                               for r in rows]])
    print(_table(table))
    return 0


def _list(args, store) -> int:
    import time

    runs = store.list(include_damaged=True)
    if args.json:
        print_json([{"run": r.id, "status": r.status, "model": r.config.get("model"),
                     "preset": r.config.get("preset"), "epochs": len(r.history), "top1": r.metrics.get("top1"),
                     "seconds": r.metrics.get("seconds_total"), "created": r.created, "path": str(r.path),
                     "error": r.error, "intact": r.intact, "reference": r.reference} for r in runs])
        return 0
    if not runs:
        print(f"no runs in {store.root.resolve()} yet (python -m resnet_lab train --preset quick-cpu makes one)")
        return 0
    rows = [["run", "status", "model", "preset", "epochs", "top-1", "seconds", "started"]]
    for r in runs:
        rows.append([r.id + (" (reference, read-only)" if r.reference else ""), r.status,
                     shown(r.config.get("model", "?")), shown(r.config.get("preset") or "-"),
                     str(len(r.history)), _pct(r.metrics.get("top1")), _secs(r.metrics.get("seconds_total")),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))])
    print(_table(rows))
    damaged = [r for r in runs if r.status == "damaged" and not r.reference]
    for r in damaged:
        print(f"\n{r.id}: damaged ({shown(r.error)}); intact: {', '.join(r.intact) or 'nothing'}")
    if damaged:
        print("\n`runs --recover ID` rewrites a damaged run's files from what is intact; "
              "`runs --delete ID` removes it.")
    for r in runs:
        if r.status == "damaged" and r.reference:  # shipped with the app: restored, never recovered or deleted
            print(f"\n{r.id} (reference): fails its checksum check, so it is not used: {shown(r.error)}")
    for r in runs:
        if r.status == "running" and r.unverified:
            print(f"\n{r.id}: marked running by {shown(r.unverified)}. If it is not training any more, "
                  f"`runs --recover {r.id}` marks it interrupted (keeping what it has) and "
                  f"`runs --delete {r.id} --force` deletes it.")
    print(f"\n{len(runs)} run(s) in {store.root.resolve()}")
    return 0
