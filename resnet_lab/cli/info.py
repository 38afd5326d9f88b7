"""``python -m resnet_lab info [--data SRC] [--json]``: versions, device and dataset status, for bug reports and
for checking a machine before class."""

from __future__ import annotations

import platform
import sys

from resnet_lab import __version__
from resnet_lab.cli.common import print_json
from resnet_lab.config import cache_dir, device_description, runs_dir
from resnet_lab.data import dataset_status

# distribution name -> what it is used for; versions are read from package metadata (nothing is imported).
REQUIRED = ("torch", "torchvision", "numpy", "pillow", "tqdm")
OPTIONAL = {
    "streamlit": "the app",
    "plotly": "app charts",
    "pandas": "app tables",
    "torchinfo": "model summaries",
    "albumentations": "CPU augmentation pipeline",
    "captum": "Grad-CAM and attributions",
    "torch-lr-finder": "LR range test cross-check",
    "optuna": "hyperparameter search",
    "sqlalchemy": "search storage",
    "psycopg": "PostgreSQL search storage",
    "pytest": "tests",
    "playwright": "browser tests",
}


def add_parser(subparsers):
    p = subparsers.add_parser("info", help="versions, device and dataset status",
                              description="Show package versions, the compute device and what the data source holds.")
    p.add_argument("--data", default=None,
                   help="cifar10, or a class-folder directory / .tar.gz (default: $RESNET_LAB_DATA or cifar10)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def collect(data: str | None = None) -> dict:
    return {
        "resnet_lab": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "packages": {name: _version(name) for name in REQUIRED},
        "optional": {name: _version(name) for name in OPTIONAL},
        "device": device_description(),
        "dataset": dataset_status(data),
        "paths": {"cache": _cache_text(cache_dir), "runs": str(runs_dir().resolve())},
    }


def _cache_text(cache_dir) -> str:
    try:
        return str(cache_dir())
    except OSError as exc:
        return f"UNUSABLE: RESNET_LAB_CACHE must name a folder ({exc.strerror or exc})"


def run(args) -> int:
    info = collect(args.data)
    if args.json:
        print_json(info)
        return 0

    out = sys.stdout.write
    out(f"resnet_lab {info['resnet_lab']}  ·  Python {info['python']}  ·  {info['platform']}\n\n")
    out("Packages\n")
    for name, ver in info["packages"].items():
        out(f"  {name:<16} {ver or 'MISSING (required)'}\n")
    for name, ver in info["optional"].items():
        out(f"  {name:<16} {ver or '-':<12} {OPTIONAL[name]}{'' if ver else ' (not installed)'}\n")

    dev = info["device"]
    out("\nDevice\n")
    if dev["cuda"]:
        out(f"  GPU: {dev['device']} ({dev['gpu_memory_gib']} GiB)\n")
    else:
        out(f"  CPU only ({dev['cpu_cores']} cores): no CUDA GPU visible to torch {dev['torch']}\n")

    ds = info["dataset"]
    out("\nDataset\n")
    out(f"  source:  {ds['source']}\n")
    if ds["ok"]:
        if ds.get("path"):
            out(f"  path:    {ds['path']}\n")
        out(f"  train:   {ds['train_size']:,} images\n")
        out(f"  test:    {ds['test_size']:,} images\n")
        out(f"  classes: {', '.join(ds['classes'])}\n")
        out(f"  decoded: {'yes (cached)' if ds.get('cached') else 'not yet (decoded on first use)'}\n")
        if ds.get("note"):
            out(f"  note:    {ds['note']}\n")
    else:
        out("  NOT USABLE:\n")
        for line in str(ds["error"]).splitlines():
            out(f"    {line}\n")

    out("\nPaths\n")
    out(f"  cache:   {info['paths']['cache']}\n")
    out(f"  runs:    {info['paths']['runs']}\n")
    return 0
