"""``python -m resnet_lab <command>``: one module per subcommand, imported only when needed.

Each module has ``add_parser(subparsers)`` and ``run(args) -> int``; heavy imports live inside ``run``
so ``train`` needs nothing beyond torch, torchvision and numpy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from resnet_lab.cli.common import CLIError, positive_int
from resnet_lab.config import cpu_cores
from resnet_lab.data import safe_text

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
    "explain": "explain",
    "errors": "errors",
    "check": "check",
    "report": "report",
    "degradation": "degradation",
    "landscape": "landscape",
    "search": "search",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m resnet_lab",
                                     description="Residual networks on CIFAR-10: data, models, training, inspection.")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (for bug reports)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
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
    """The intra-op thread count, chosen deliberately (before torch is imported, so OpenMP starts that many).
    ``--threads`` itself is checked by argparse (positive_int), like every other option."""
    import os

    if threads is not None and threads < 1:
        raise ValueError("--threads must be at least 1")
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = threads or (int(env) if env.isdigit() and int(env) > 0 else cpu_cores())
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)  # torch reads either
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


class StdoutError(Exception):
    """Writing to stdout failed (a full disk behind `> file`, a reader that left the pipe): not a bug to report."""

    def __init__(self, error: OSError) -> None:
        # worded for whoever catches it on the way (the trainer turns a callback's error into the run's message)
        super().__init__(f"the output could not be written to stdout ({error.strerror or error})")
        self.error = error


class _GuardedStdout:
    """sys.stdout while a command runs: an OSError from writing it becomes a StdoutError, so main() can tell it
    from an OSError of the command's own files (an ENOSPC there is the runs folder's disk, said by the command)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutError(exc) from exc

    def flush(self):
        try:
            return self._stream.flush()
        except OSError as exc:
            raise StdoutError(exc) from exc

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    """Point the stdout file descriptor at /dev/null: what is still buffered goes nowhere at exit, instead of
    failing again there with Python's 'Exception ignored ... BrokenPipeError' lines."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real descriptor (captured in tests)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    set_threads(args.threads)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    real_stdout = sys.stdout
    sys.stdout = _GuardedStdout(real_stdout)
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a full disk or a closed pipe shows up here, not at interpreter exit
        return code
    except CLIError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except (StdoutError, BrokenPipeError) as exc:
        import errno

        error = exc.error if isinstance(exc, StdoutError) else exc
        sys.stdout = real_stdout
        _silence_stdout()
        if isinstance(error, BrokenPipeError) or error.errno == errno.EPIPE:
            # `python -m resnet_lab models | head`: the reader left; exit quietly like other Unix tools
            return 0
        reason = "the disk is full" if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)) else \
            (error.strerror or str(error))
        sys.stderr.write(f"error: the output could not be written to stdout ({reason}); send it to a disk with "
                         "free space, or let it print to the terminal\n")
        return 2
    except Exception as exc:
        # Every known bad input has its own message; this is the net under them: one line, no traceback,
        # unless --debug asks for it.
        if args.debug:
            raise

        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {safe_text(exc, 500)}\n"
                         "(run again with --debug before the command to see the traceback, and report it)\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        if isinstance(sys.stdout, _GuardedStdout):
            sys.stdout = real_stdout
        warnings.showwarning = previous
