"""``python -m resnet_lab check --run RUN | --model FILE.py:Class [--json]``: the assignment, requirement by
requirement (✔ pass, ✘ fail, ? unknown, · for information), each with what was measured."""

from __future__ import annotations

import argparse

from resnet_lab import assignment
from resnet_lab import inspect as I
from resnet_lab import models
from resnet_lab.cli.common import add_command, fail, print_json, shown
from resnet_lab.data import safe_text
from resnet_lab.runs import RunError
from resnet_lab.settings import key_value


SUMMARY = "check a run (or a network alone) against the course assignment"
DESCRIPTION = ("Each requirement of the assignment — the architecture (channels per stage, the two residual "
               "adds, max-pool 4, FC to 10), the training settings (24 epochs, peak at 5, no annihilation, "
               "batch 512, Adam, cross-entropy, pad-crop-flip-cutout) and the 90% target — as pass, fail or "
               "unknown, with the value measured. The network is read off its traced graph, so it works on "
               "a network written any way. Loading a model file runs its code.")
EXAMPLES = ("python -m resnet_lab check --run latest",
            "python -m resnet_lab check --model my_nets/custom_resnet.py:Net",
            "python -m resnet_lab check --run 20261206-101010-custom_resnet-ab12 --json")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "check", SUMMARY, DESCRIPTION, run=True, examples=EXAMPLES)
    parser.add_argument("--model", default=None, metavar="FILE.py:Class",
                        help="check a network alone (no run): a model file or a registry name")
    parser.add_argument("--model-option", dest="model_options", action="append", type=key_value, default=[],
                        metavar="KEY=VALUE", help="a constructor argument of --model (repeat as needed)")
    return parser


def run(args) -> int:
    if args.model:
        problem = models.model_problem(args.model, options=dict(args.model_options))
        if problem:
            fail(problem)
        items = assignment.check_network(models.build(args.model, **dict(args.model_options)))
        what = {"model": args.model}
    else:
        try:
            run_ = I.open_run(args.run, need_checkpoint=True)
            items = assignment.check_run(run_)
        except (I.InspectError, RunError, models.ModelFileError) as exc:
            fail(str(exc))
        what = {"run": run_.id, "model": run_.config.get("model")}
    result = {**what, **assignment.summary(items)}
    if args.json:
        print_json(result)
        return 0
    print(f"the assignment, checked on {shown(what.get('run') or what['model'])}"
          + (f" ({shown(what['model'])})" if what.get("run") else "") + ":")
    group = None
    for item in items:
        if item.group != group:
            group = item.group
            print(f"\n{group}")
        print(f"  {safe_text(item.line, 600)}")
    print(f"\n{result['passed']} passed, {result['failed']} failed, {result['unknown']} unknown")
    return 0
