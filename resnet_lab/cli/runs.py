"""``python -m resnet_lab runs [--json] [--delete ID ...] [--compare ID ID ...]``: the saved training runs."""

from __future__ import annotations

from resnet_lab.cli.common import fail, print_json


def add_parser(subparsers):
    p = subparsers.add_parser("runs", help="list, compare or delete saved training runs",
                              description="List the runs in $RESNET_LAB_RUNS (./runs), newest first; compare "
                                          "several side by side (final numbers and test accuracy per epoch); delete.")
    p.add_argument("--delete", nargs="+", metavar="ID", help="delete these runs (their folders)")
    p.add_argument("--compare", nargs="+", metavar="ID", help="compare these runs")
    p.add_argument("--json", action="store_true", help="print one JSON value as the last line")
    return p


def _pct(value) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "-"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run(args) -> int:
    import time

    from resnet_lab.runs import RunError, RunStore

    store = RunStore()
    if args.delete:
        deleted = []
        for rid in args.delete:
            try:
                store.delete(rid)
            except RunError as exc:
                fail(str(exc))
            deleted.append(rid)
            if not args.json:
                print(f"deleted {rid}")
        if args.json:
            print_json({"deleted": deleted})
        return 0
    if args.compare:
        try:
            rows = store.compare(args.compare)
        except RunError as exc:
            fail(str(exc))
        if args.json:
            print_json(rows)
            return 0
        head = ["", *[r["run"] for r in rows]]
        table = [head]
        for key in ("model", "preset", "status", "optimizer", "lr_max", "batch_size", "n_train", "seed", "epochs"):
            table.append([key, *[str(r[key]) if r[key] is not None else "-" for r in rows]])
        table.append(["top-1", *[_pct(r["top1"]) for r in rows]])
        table.append(["top-5", *[_pct(r["top5"]) for r in rows]])
        table.append(["seconds", *[f"{r['seconds']:.1f}" if r["seconds"] is not None else "-" for r in rows]])
        for e in range(max(len(r["test_acc"]) for r in rows)):
            table.append([f"epoch {e + 1} test", *[_pct(r["test_acc"][e]) if e < len(r["test_acc"]) else ""
                                                   for r in rows]])
        print(_table(table))
        return 0

    runs = store.list()
    if args.json:
        print_json([{"run": r.id, "status": r.status, "model": r.config.get("model"),
                     "preset": r.config.get("preset"), "epochs": len(r.history), "top1": r.metrics.get("top1"),
                     "seconds": r.metrics.get("seconds_total"), "created": r.created, "path": str(r.path),
                     "error": r.error, "reference": r.reference} for r in runs])
        return 0
    if not runs:
        print(f"no runs in {store.root.resolve()} yet (python -m resnet_lab train --preset quick-cpu makes one)")
        return 0
    rows = [["run", "status", "model", "preset", "epochs", "top-1", "seconds", "started"]]
    for r in runs:
        secs = r.metrics.get("seconds_total")
        rows.append([r.id + (" (reference, read-only)" if r.reference else ""), r.status, str(r.config.get("model", "?")), str(r.config.get("preset") or "-"),
                     str(len(r.history)), _pct(r.metrics.get("top1")), f"{secs:.1f}" if secs else "-",
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))])
    print(_table(rows))
    print(f"\n{len(runs)} run(s) in {store.root.resolve()}")
    return 0
