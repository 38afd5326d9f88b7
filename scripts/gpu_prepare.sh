#!/usr/bin/env bash
# What a GPU lease needs that the GPU machine lacks, in the two ignored folders the device tool carries:
#   .data/cifar10-jpeg.tar.gz   the shared archive (../shared does not travel; ~20 MB)
#   .whl/                       pure-Python wheels of the optional packages the GPU steps use: airbench (the speed
#                               record, built from its sdist), torch-lr-finder with tqdm and packaging (the LR test's
#                               second opinion). The machine has torch, torchvision, numpy and pillow only.
# Then, with the device tool:  carry [".data", ".whl"], command "bash benchmarks/gpu_session.sh
#   .data/cifar10-jpeg.tar.gz $OUT run1" (see docs/benchmarks.md for both runs and their time limits).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
ARCHIVE=${1:-../shared/data/cifar10-jpeg.tar.gz}
mkdir -p .data .whl
cp -u "$ARCHIVE" .data/cifar10-jpeg.tar.gz
"$PIP" download -q --no-deps --only-binary=:all: -d .whl torch-lr-finder tqdm packaging
"$PIP" wheel -q --no-deps -w .whl airbench
rm -f .whl/*.tar.gz
du -sh .data .whl
ls .whl
