"""``python -m resnet_lab models``: the registry as a table, or one model's layer-by-layer summary."""

from __future__ import annotations

import argparse

from resnet_lab import models
from resnet_lab.cli.common import fail, positive_int, print_json

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models", help="list every model with its family and parameter count, or summarise one",
        description="List the model registry. With --summary NAME, print that model's layers, output "
                    "shapes, parameters and multiply-accumulates (needs torchinfo).")
    parser.add_argument("--summary", metavar="NAME", help="summarise one model layer by layer")
    parser.add_argument("--input-size", type=positive_int, default=32, metavar="N",
                        help="image side in pixels for --summary (default 32; 224 suits stem=imagenet)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="build option for --summary, e.g. shortcut=B or stem=imagenet (repeatable)")
    parser.add_argument("--num-classes", type=positive_int, default=10, help="output classes (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON value as the last stdout line")
    return parser


def run(args) -> int:
    if args.summary:
        return _summary(args, models)
    rows = []
    for name in models.list_models():
        info = models.model_info(name)
        rows.append({"name": name, "family": info["family"],
                     "params": models.param_count(name, num_classes=args.num_classes),
                     "description": info["description"]})
    if args.json:
        print_json(rows)
        return 0
    name_w = max(len(r["name"]) for r in rows)
    family_w = max(len(r["family"]) for r in rows)
    print(f"{'model':<{name_w}}  {'family':<{family_w}}  {'params':>11}  description")
    for r in rows:
        print(f"{r['name']:<{name_w}}  {r['family']:<{family_w}}  {r['params']:>11,}  {r['description']}")
    print("\nOne model's layers and options: python -m resnet_lab models --summary NAME [--option KEY=VALUE]")
    return 0


def _parse_options(name: str, pairs: list[str], models) -> dict:
    """KEY=VALUE strings -> typed options; booleans are read from true/false, everything else stays text."""
    try:
        accepted = models.model_info(name)["options"]
    except ValueError as exc:
        fail(str(exc))
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--option expects KEY=VALUE (e.g. shortcut=B); got {pair!r}")
        if key in accepted and isinstance(accepted[key]["default"], bool):
            if value.lower() not in _TRUE | _FALSE:
                fail(f"option {key} expects true or false; got {value!r}")
            options[key] = value.lower() in _TRUE
        else:
            options[key] = value
    return options


def _summary(args, models) -> int:
    name = args.summary
    options = _parse_options(name, args.option, models)
    try:
        model = models.build(name, num_classes=args.num_classes, **options)
    except ValueError as exc:
        fail(str(exc))
    size = args.input_size
    try:
        rows = models.summary(model, (1, 3, size, size))
    except ImportError:
        fail("the summary needs torchinfo: pip install torchinfo")
    except RuntimeError as exc:
        cause = exc.__cause__ or exc  # torchinfo wraps the model's own error
        fail(f"{name} cannot take a {size}x{size} image: {str(cause).splitlines()[0]}. "
             "Every model takes 32 (the default); stem=imagenet models also take 224.")
    if args.json:
        print_json({"name": name, "num_classes": model.num_classes, "options": model.build_options,
                    "rows": list(rows), "totals": rows.totals})
        return 0
    info = models.model_info(name)
    print(f"{name} ({info['family']}): {info['description']}")
    print(f"paper: {info['paper']}")
    print(f"options: {model.build_options}")
    for key, opt in info["options"].items():
        print(f"  {key}: {opt['help']}")
    print(rows.text)
    return 0
