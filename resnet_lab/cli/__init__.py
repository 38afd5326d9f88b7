"""``python -m resnet_lab <command>``: one module per subcommand, imported only when needed.

Each module has ``add_parser(subparsers)`` and ``run(args) -> int``; heavy imports live inside ``run``
so ``train`` needs nothing beyond torch, torchvision and numpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from resnet_lab.cli.common import CLIError

# name -> module (resnet_lab.cli.<module>); a module that does not exist yet is skipped.
COMMANDS = {
    "info": "info",
    "models": "models",
    "train": "train",
    "runs": "runs",
    "bench": "bench",
    "lr-find": "lr_find",
    "rf": "rf",
    "inspect": "inspect",
    "errors": "errors",
    "degradation": "degradation",
    "landscape": "landscape",
    "search": "search",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m resnet_lab",
                                     description="Residual networks on CIFAR-10: data, models, training, inspection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"resnet_lab.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"resnet_lab.cli.{module}":
                continue
            raise
        sp = mod.add_parser(sub)
        sp.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # `python -m resnet_lab models | head`: the reader left; exit quietly like other Unix tools
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
