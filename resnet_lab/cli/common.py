"""Small helpers shared by the subcommands: JSON last line, student-readable errors."""

from __future__ import annotations

import json
import sys


class CLIError(Exception):
    """Raised by a subcommand for a problem the user can fix; main() prints it to stderr, exit 2."""


def fail(message: str) -> None:
    raise CLIError(message)


def print_json(value) -> None:
    """The last line of stdout is one JSON value, so scripts and benchmarks can read it."""
    sys.stdout.write(json.dumps(value, default=_default) + "\n")
    sys.stdout.flush()


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


def add_data_args(parser, subset_default=None, test_subset_default=None) -> None:
    parser.add_argument("--data", default=None,
                        help="cifar10 (download once), or a class-folder directory / .tar.gz (default: $RESNET_LAB_DATA or cifar10)")
    parser.add_argument("--subset", type=int, default=subset_default, help="class-balanced number of training images")
    parser.add_argument("--test-subset", type=int, default=test_subset_default, help="class-balanced number of test images")


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


MAX_SEED = 2**63 - 1  # torch.manual_seed and numpy's generators take 0 ... 2**63 - 1


def seed_int(text: str) -> int:
    """A seed: a whole number 0 ... 2**63-1 (torch and numpy refuse anything larger with an overflow)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be between 0 and 2**63-1 = {MAX_SEED}; got {text}")
    return value


def device_arg(text: str) -> str:
    """--device of every command: auto | cpu | cuda | cuda:N, parsed by the one parser in resnet_lab.config."""
    import argparse

    from resnet_lab.config import parse_device

    try:
        return parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def shown(text) -> str:
    """A name from a file, a run or a folder, safe to print on a terminal (no escape codes)."""
    from resnet_lab.data import safe_text

    return safe_text(text, 200)
