"""``python -m resnet_lab landscape --run ID [--run ID2] [--json]``: loss landscape around trained nets.

Li et al. 2018: the training loss along one (1-D slice) and two (2-D grid) filter-normalised random directions
around each run's trained weights, the same direction seeds and span for both runs. With ``--json`` the last
line of stdout holds the shape measures of each surface and the path of the saved result.
"""

from __future__ import annotations

import shlex

from resnet_lab import landscape as L
from resnet_lab.cli.common import (
    add_command,
    check_output,
    device_arg,
    fail,
    fail_error,
    positive_float,
    positive_int,
    print_json,
    QUIET_JSON_HELP,
    run_id,
    seed_int,
)
from resnet_lab.cli.degradation import repo_relative
from resnet_lab.cli.train import CooperativeStop
from resnet_lab.data import DataError, load_dataset
from resnet_lab.landscape import DEFAULTS, GPU_DEFAULTS
from resnet_lab.runs import atomic_write_json, RunError

FLAGS = {name: f"--{name}" for name in ("images", "points", "grid", "span", "seed")}  # check_settings' problems


def add_parser(subparsers):
    d, g = DEFAULTS, GPU_DEFAULTS
    p = add_command(
        subparsers, "landscape", "loss landscape around trained nets (Li et al. 2018)",
        "Evaluate the training loss of one or two trained runs along filter-normalised random directions: a 1-D "
        "slice and a 2-D grid, with the same direction seeds for both runs.",
        json_help=QUIET_JSON_HELP,
        examples=("python -m resnet_lab landscape --run 20261130-012345-plain32-ab12 "
                  "--run 20261130-012400-resnet32-cd34 --json",))
    p.add_argument("--run", action="append", required=True, metavar="ID", type=run_id,
                   help="a run id (python -m resnet_lab runs lists them); give --run twice to compare two nets")
    p.add_argument("--images", type=positive_int,
                   help=f"training images the loss is averaged over (default {d['images']} on a CPU, "
                        f"{g['images']} on a GPU)")
    p.add_argument("--points", type=positive_int,
                   help=f"points of the 1-D slice, odd (default {d['points']} on a CPU, {g['points']} on a GPU)")
    p.add_argument("--grid", type=positive_int,
                   help=f"points per side of the 2-D grid, odd (default {d['grid']} on a CPU: {d['grid'] ** 2} "
                        f"evaluations per net; {g['grid']} on a GPU)")
    p.add_argument("--span", type=positive_float, default=d["span"],
                   help="the grid covers -span..span along each direction (default 1: one filter norm)")
    p.add_argument("--seed", type=seed_int, default=d["seed"],
                   help="seed of the first direction (second: seed+1)")
    p.add_argument("--device", type=device_arg, default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--data", default=None, help="data source, if not the one the runs were trained on")
    p.add_argument("--output", help="also write the result JSON to this path")
    return p


def _command(args) -> str:
    parts = ["python", "-m", "resnet_lab", "landscape"]
    for rid in args.run:
        parts += ["--run", rid]
    parts += ["--images", str(args.images), "--points", str(args.points), "--grid", str(args.grid),
              "--span", f"{args.span:g}", "--seed", str(args.seed), "--device", args.device]

    if args.data:
        parts += ["--data", repo_relative(args.data)]
    if args.output:
        parts += ["--output", repo_relative(args.output)]
    return shlex.join(parts)


def run(args) -> int:
    if args.output:
        check_output(args.output)  # before minutes of computing, not after
    try:
        base = L.defaults(args.device)
    except ValueError as exc:
        fail(str(exc))
    for key in ("images", "points", "grid"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    try:
        L.check_settings(args.images, args.points, args.grid, args.span, args.seed)
    except L.LandscapeError as exc:
        fail_error(exc, FLAGS)
    command = _command(args)

    def show(event):
        if not args.json and event.get("message"):
            print(f"[{100 * event.get('progress', 0):5.1f}%] {event['message']}", flush=True)

    try:
        data = load_dataset(args.data) if args.data else None
        with CooperativeStop() as stop:
            result = L.compute(args.run, images=args.images, points=args.points, grid=args.grid, span=args.span,
                               seed=args.seed, batch_size=base["batch_size"], device=args.device, data=data, callback=show,
                               stop_event=stop.event, command=command)
    except (L.LandscapeError, DataError, RunError, ValueError) as exc:
        fail(str(exc))
    if args.output:
        atomic_write_json(args.output, {k: v for k, v in result.items() if k != "path"})
    nets = {n["label"]: {"run_id": n["run_id"], "origin_loss": n["origin_loss"], "origin_acc": n["origin_acc"],
                         **(n["roughness"] or {})} for n in result["nets"]}
    if not args.json:
        print(f"\n{'net':<22}{'loss at 0':>10}{'non-convex':>12}{'1-D minima':>12}{'edge rise':>11}")
        for label, v in nets.items():
            nc = v.get("nonconvex_fraction")
            print(f"{label:<22}{v['origin_loss']:>10.3f}{'' if nc is None else f'{nc:.0%}':>12}"
                  f"{v.get('line_minima') if v.get('line_minima') is not None else '':>12}"
                  f"{v.get('edge_rise') if v.get('edge_rise') is None else round(v['edge_rise'], 2):>11}")
        print(f"{result['status']} in {result['seconds_total']:.0f} s; saved to {result['path']}", flush=True)
    print_json({"status": result["status"], "nets": nets, "comparison": result.get("comparison"),
                "settings": result["settings"], "seconds": result["seconds_total"], "path": result["path"],
                "command": command})
    return 130 if result["status"] == "stopped" else 0
