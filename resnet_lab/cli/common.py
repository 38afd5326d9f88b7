"""Small helpers shared by the subcommands: JSON last line, student-readable errors."""

from __future__ import annotations

import argparse
import json
import math
import sys

from resnet_lab.config import parse_device
from resnet_lab.data import safe_text
from resnet_lab.runs import output_file_problem
from resnet_lab.settings import MAX_SEED


class CLIError(Exception):
    """Raised by a subcommand for a problem the user can fix; main() prints it to stderr, exit 2."""


def fail(message: str) -> None:
    raise CLIError(message)


JSON_HELP = "print one JSON object as the last stdout line"
QUIET_JSON_HELP = "no progress output; the last line is the JSON summary"


def add_command(subparsers, name: str, summary: str, description: str, *, run: bool = False,
                json_help: str = JSON_HELP, examples: tuple[str, ...] = (), notes: str = "") -> argparse.ArgumentParser:
    """A subcommand's parser with the options commands share: --json always, --run for those that read a run;
    ``notes`` and ``examples`` (command lines) end its --help as written."""
    epilog = notes + ("examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else "")
    parser = subparsers.add_parser(name, help=summary, description=description, epilog=epilog or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter if epilog else
                                   argparse.HelpFormatter)
    if run:
        parser.add_argument("--run", default="latest", type=run_id,
                            help="run id, or 'latest' (the newest run with predictions)")
    parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def fail_invalid(problems: dict[str, str], flags: dict[str, str], what: str = "settings") -> None:
    """Stop with every problem of a config, each under the option that sets it; nothing when there is none.
    A setting this command has no option for is shown by its message alone (each message names the setting in
    words): a field name like ``batch_size`` is never shown to the user."""
    if problems:
        fail(f"invalid {what}:\n" + "\n".join(f"  {flags[k]}: {v}" if k in flags else f"  {v}"
                                               for k, v in problems.items()))


def fail_error(exc: Exception, flags: dict[str, str] | None = None) -> None:
    """Stop with a library error. One that lists invalid settings (``settings.invalid``: ``problems`` by field)
    is shown per option, as ``fail_invalid`` does; any other by its message."""
    problems = getattr(exc, "problems", None)
    if problems:
        fail_invalid(problems, flags or {}, getattr(exc, "what", "settings"))
    fail(str(exc))


def print_json(value) -> None:
    """The last line of stdout is one JSON value, so scripts and benchmarks can read it. Strict JSON: NaN and
    infinities (a diverged loss, an unfinished grid point) become null, since json.loads elsewhere (JavaScript,
    jq, Go) refuses Python's NaN/Infinity tokens."""
    sys.stdout.write(json.dumps(_strict(value), default=_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def _strict(value):
    """``value`` with every non-finite float (Python or numpy, in dicts, lists, tuples, arrays) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    np = sys.modules.get("numpy")  # a numpy value exists only once numpy is imported: never import it for this
    if np is not None and isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if np is not None and isinstance(value, np.generic):
        return _strict(value.item())
    return value


def _default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def add_data_arg(parser) -> None:
    parser.add_argument("--data", default=None,
                        help="cifar10 (download once), or a class-folder directory / .tar.gz (default: $RESNET_LAB_DATA or cifar10)")


def add_data_args(parser, subset_default=None, test_subset_default=None) -> None:
    add_data_arg(parser)
    parser.add_argument("--subset", type=int, default=subset_default, help="class-balanced number of training images")
    parser.add_argument("--test-subset", type=int, default=test_subset_default, help="class-balanced number of test images")


def _parsed(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def run_id(text: str) -> str:
    """--run: a run id or 'latest'. An empty one is refused here: left to the library it would read as
    'latest' and quietly pick another run than the one the user meant to name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the run id is empty; give a run id (python -m resnet_lab runs lists "
                                         "them) or 'latest'")
    return text.strip()


def check_output(path, flag: str = "--output") -> None:
    """Refuse an output file that cannot be written, before any training or computing (not after it)."""

    problem = output_file_problem(path)
    if problem:
        fail(f"{flag} {shown(path)}: {problem}")


def positive_float(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def seed_int(text: str) -> int:
    """A seed: a whole number 0 ... 2**63-1 (torch and numpy refuse anything larger with an overflow)."""
    value = _parsed(text, int, "a whole number")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be between 0 and 2**63-1 = {MAX_SEED}; got {text}")
    return value


def device_arg(text: str) -> str:
    """--device of every command: auto | cpu | cuda | cuda:N, parsed by the one parser in resnet_lab.config."""
    import argparse

    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def shown(text) -> str:
    """A name from a file, a run or a folder, safe to print on a terminal (no escape codes)."""

    return safe_text(text, 200)
