"""``python -m resnet_lab report --run RUN --out DIR [--lr-test SWEEP.json]``: the assignment's hand-in, written
from a finished run: DIR/README.md with its PNGs (``resnet_lab.report``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnet_lab import inspect as I
from resnet_lab.cli.common import add_command, fail, print_json, shown
from resnet_lab.data import DataError
from resnet_lab.report import ReportError, write_report
from resnet_lab.runs import output_file_problem, RunError


SUMMARY = "write the assignment report of a run: README.md with its figures"
DESCRIPTION = ("Write DIR/README.md and its PNGs for a finished run: the assignment check, the model summary, "
               "the receptive field per layer, the LR range test (with --lr-test), the one-cycle schedule, "
               "the training log, loss and accuracy curves, the confusion matrix, the misclassified test "
               "images and Grad-CAM on some of them.")
EXAMPLES = ("python -m resnet_lab report --run latest --out my_report",
            "python -m resnet_lab lr-find --json > sweep.json   # then train, then:",
            "python -m resnet_lab report --run latest --out my_report --lr-test sweep.json")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "report", SUMMARY, DESCRIPTION, run=True, examples=EXAMPLES)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for README.md and its figures")
    parser.add_argument("--lr-test", default=None, metavar="FILE.json",
                        help="the LR range test the run's LRs came from (the last line of lr-find --json)")
    parser.add_argument("--data", default=None, help="the run's data source, if it moved")
    return parser


def _sweep(path: str) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8").strip().splitlines()[-1]
        sweep = json.loads(text)
    except (OSError, IndexError, ValueError) as exc:
        fail(f"--lr-test {path}: not the output of lr-find --json ({exc})")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("lrs"), list) or not isinstance(sweep.get("losses"),
                                                                                               list):
        fail(f"--lr-test {path}: it has no lrs/losses lists; give the last line of lr-find --json")
    return sweep


def run(args) -> int:
    problem = output_file_problem(Path(args.out) / "README.md")
    if problem:
        fail(f"--out {args.out}: {problem}")
    sweep = _sweep(args.lr_test) if args.lr_test else None
    try:
        run_ = I.open_run(args.run, need_checkpoint=True)
        data = I.run_dataset(run_, args.data) if args.data else None
        path = write_report(run_, args.out, data=data, lr_test=sweep)
    except (I.InspectError, RunError, ReportError, DataError) as exc:
        fail(str(exc))
    figures = sorted(p.name for p in path.parent.glob("*.png"))
    if args.json:
        print_json({"run": run_.id, "readme": str(path), "figures": figures})
    else:
        print(f"wrote {shown(path)} with {len(figures)} figures ({', '.join(figures)})")
    return 0
