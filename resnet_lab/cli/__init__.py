"""``python -m resnet_lab <command>``: one module per subcommand, imported only when needed.

Each module has ``add_parser(subparsers)`` and ``run(args) -> int``; heavy imports live inside ``run``
so ``train`` needs nothing beyond torch, torchvision and numpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

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
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (for bug reports)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else every core this process "
                             "may use). On a shared machine 1 is often fastest: extra threads only contend.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"resnet_lab.cli.{module}")
        sp = mod.add_parser(sub)
        sp.set_defaults(_run=mod.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """resnet_lab's own warnings (DataWarning ...) as one plain line; others as Python prints them."""
    if category.__module__.startswith("resnet_lab"):
        sys.stderr.write(f"warning: {message}\n")
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def set_threads(threads: int | None) -> int:
    """The intra-op thread count, chosen deliberately (before torch is imported, so OpenMP starts that many)."""
    import os

    from resnet_lab.config import cpu_cores

    if threads is not None and threads < 1:
        raise SystemExit("error: --threads must be at least 1")
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = threads or (int(env) if env.isdigit() and int(env) > 0 else cpu_cores())
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)  # torch reads either
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    set_threads(args.threads)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except BrokenPipeError:
        # `python -m resnet_lab models | head`: the reader left; exit quietly like other Unix tools
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        # Every known bad input has its own message; this is the net under them: one line, no traceback,
        # unless --debug asks for it.
        if args.debug:
            raise
        from resnet_lab.data import safe_text

        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {safe_text(exc, 500)}\n"
                         "(run again with --debug before the command to see the traceback, and report it)\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        warnings.showwarning = previous
