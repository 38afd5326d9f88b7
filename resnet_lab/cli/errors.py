"""``python -m resnet_lab errors --run RUN [--json]``: accuracy, confusion matrix and most-confused pairs of a run.

Reads the run's stored test predictions only (no model, no data, no re-evaluation), so it is instant."""

from __future__ import annotations

import argparse

from resnet_lab import inspect as I
from resnet_lab import metrics as M
from resnet_lab.cli.common import add_command, fail, positive_int, print_json, shown
from resnet_lab.runs import RunError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "errors", run=True,
        summary="a run's top-1/3/5 accuracy, per-class accuracy, confusion matrix and most-confused pairs",
        description="Summarise the mistakes of a trained run from its stored test predictions: top-1/3/5 "
                    "accuracy, accuracy per class, the confusion matrix (rows: true class, columns: predicted) "
                    "and the class pairs it confuses most.")
    parser.add_argument("--min-count", type=positive_int, default=1, metavar="N",
                        help="list only pairs confused at least N times (default 1)")
    parser.add_argument("--top", type=positive_int, default=15, metavar="K",
                        help="how many most-confused pairs to print (default 15; --json lists all)")
    parser.add_argument("--normalize", action="store_true",
                        help="print the confusion matrix as %% of each true class instead of counts")
    return parser


def run(args) -> int:
    try:
        run_ = I.open_run(args.run)
        pred = run_.predictions()
        classes = run_.classes  # a RunError when config.json's "classes" is not a list of names
    except (I.InspectError, RunError) as exc:
        fail(str(exc))
    n_classes = pred["probs"].shape[1]
    classes = classes or [str(i) for i in range(n_classes)]
    if len(classes) != n_classes:
        fail(f"run {run_.id}: config lists {len(classes)} classes but the predictions have {n_classes}")
    s = I.summary(pred, classes, min_count=args.min_count)
    if args.json:  # JSON escapes control characters itself
        print_json({"run": run_.id, "model": run_.config.get("model"), **s})
        return 0
    # Class names come from folder names: never let one send escape codes to the terminal.
    classes = [shown(c) for c in classes]
    s["most_confused"] = [[shown(t), shown(p), n] for t, p, n in s["most_confused"]]

    print(f"run {run_.id} ({shown(run_.config.get('model'))}): {s['n']:,} test images, {s['n_wrong']:,} wrong")
    print(f"top-1 {s['top1']:.2%}   top-3 {s['top3']:.2%}   top-5 {s['top5']:.2%}")
    print("\naccuracy per class:")
    width = max(len(c) for c in classes)
    for name, acc in zip(classes, s["per_class_acc"]):
        bar = "" if acc is None else "#" * int(round(acc * 30))
        print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.1%}'}  {bar}")

    confusion = s["confusion"]
    title = "% of each true class" if args.normalize else "counts"
    print(f"\nconfusion matrix ({title}; rows = true class, columns = predicted):")
    cells = M.normalize_confusion(confusion) * 100 if args.normalize else confusion
    short = [c[:5] for c in classes]
    col = max(6, max(len(c) for c in short) + 1)
    print(" " * (width + 2) + "".join(f"{c:>{col}}" for c in short))
    for name, row in zip(classes, cells):
        text = "".join(f"{v:>{col}.0f}" if args.normalize else f"{int(v):>{col}d}" for v in row)
        print(f"  {name:<{width}}{text}")

    pairs = s["most_confused"]
    print(f"\nmost confused (true -> predicted, at least {args.min_count}x):")
    if not pairs:
        print("  none")
    for true, predicted, count in pairs[:args.top]:
        print(f"  {true:>{width}} -> {predicted:<{width}}  {count:,}")
    if len(pairs) > args.top:
        print(f"  ... {len(pairs) - args.top} more (--top N, or --json for all)")
    return 0
