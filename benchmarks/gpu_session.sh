#!/usr/bin/env bash
# Every GPU measurement of the README's benchmark table, cut to a device lease: ~15 minutes of GPU time in all
# (machine start included), at most 10 minutes a call. Prepare first with scripts/gpu_prepare.sh.
#   bash benchmarks/gpu_session.sh DATA OUT [STEPS | run1 | run2 | all]
# DATA: the CIFAR-10 archive (.data/cifar10-jpeg.tar.gz after gpu_prepare.sh); OUT: a folder for results.
# STEPS: letters from the list below (they run in this script's order). Two named plans fit a lease:
#   run1 = T A G   correctness first: step limits 60 (info) + 180 + 150 + 60 = 450 s, one call with timeout_s 510
#   run2 = E D H   what the remaining time allows: 200 + 60 + 180 = 440 s; results are packed after each step, so
#                  a call cut off by its timeout still returns every step that finished
#   all  = T A F E G D B H (~1,070 s: more than one lease; for a machine of your own)
# Steps:
#   T CUDA correctness: batched augmentation on CUDA = CPU, a training job through the app's job runtime on the
#     cuda pool ends done, a stopped one keeps its run, the checkpoint reloads (benchmarks/gpu_checks.py)
#   A assignment preset, 3 seeds (+ sync count; keeps the seed-0 run as the custom_resnet reference)
#   G LR range test timing                                    E speed preset vs airbench94, + ablation
#   D profiler: where the assignment's time goes              H depth-degradation 'quick' suite
#   F ResNet-20 reference run (paper-resnet20, 40 epochs)     B assignment with evaluation only at the end
# Each step writes <step>.json (its one JSON line) and <step>.out into a work folder that is re-packed into
# OUT/steps.tgz after every step (so a cut-off session still returns what finished), with OUT/log.txt beside it;
# a failing step does not stop the others. Run folders go to OUT/runs.tgz after A and F and at the end.
# Optional packages (airbench for the record, torch-lr-finder) install from .whl/ when present.
set -u
DATA=$1; OUT=$2; STEPS=${3:-all}
case $STEPS in run1) STEPS=TAG ;; run2) STEPS=EDH ;; all) STEPS=TAFEGDBH ;; esac
WORK=/tmp/rl-out
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 RESNET_LAB_DATA="$DATA" RESNET_LAB_CACHE=${RESNET_LAB_CACHE:-/tmp/rl-cache}
export RESNET_LAB_RUNS=${RESNET_LAB_RUNS:-/tmp/rl-runs}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }
step() {  # step NAME SECONDS command...
  local name=$1 limit=$2; shift 2
  log "step $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.out" 2>> "$OUT/log.txt"
  local rc=$?
  tail -n 1 "$WORK/$name.out" > "$WORK/$name.json"
  log "step $name: rc=$rc in $((SECONDS - t0)) s: $(head -c 600 "$WORK/$name.json")"
  tar czf "$OUT/steps.tgz" -C "$WORK" .
}
pack_runs() {  # the run folders (custom_resnet weights as fp16 to fit the 16 MB limit) and every experiment JSON
python3 - "$OUT" <<'PY'
import json, sys, tarfile, pathlib, torch
out = pathlib.Path(sys.argv[1])
runs = pathlib.Path("/tmp/rl-runs")
with tarfile.open(out / "runs.tgz", "w:gz") as tar:
    for run in sorted(runs.glob("*")) if runs.exists() else []:
        try:
            cfg = json.loads((run / "config.json").read_text())
        except Exception:
            continue
        keep_weights = cfg.get("seed") == 0 and cfg.get("epochs", 0) > 1  # one reference per model, no warm-ups
        for f in run.iterdir():
            if f.name == "model.pt" and not keep_weights:
                continue
            if f.name == "model.pt" and "custom_resnet" in run.name:
                sd = torch.load(f, weights_only=True, map_location="cpu")
                half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
                torch.save(half, f.with_name("model_fp16.pt"))
                tar.add(f.with_name("model_fp16.pt"), arcname=f"runs/{run.name}/model.pt")
            elif not f.name.startswith(".") and f.name != "model_fp16.pt":
                tar.add(f, arcname=f"runs/{run.name}/{f.name}")
    degr = pathlib.Path("/tmp/rl-degradation")
    for f in degr.rglob("*.json") if degr.exists() else []:
        tar.add(f, arcname=f"degradation/{f.relative_to(degr)}")
PY
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/log.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/log.txt"
step info 60 python3 -m resnet_lab info --json

case $STEPS in *T*)
  step T 180 python3 benchmarks/gpu_checks.py --data "$DATA" --timeout 120 ;; esac

ASSIGN="--preset assignment --lr-max 0.005 --lr-min 0.0005 --weight-decay 1e-4"
case $STEPS in *A*)
  step A 150 python3 -m resnet_lab bench train $ASSIGN --seeds 3 --device cuda --keep-runs --sync-debug
  pack_runs ;; esac
case $STEPS in *F*)
  step F 120 python3 -m resnet_lab train --preset paper-resnet20 --epochs 40 --seed 0 --device cuda --json
  pack_runs ;; esac
case $STEPS in *E*)
  step E 200 python3 benchmarks/bench_speed.py --runs 5 --ablate --out "$WORK/ablation.json" ;; esac
case $STEPS in *G*)
  step G 60 python3 benchmarks/bench_lr_find.py --device cuda ;; esac
case $STEPS in *D*)
  step D 60 python3 benchmarks/profile_train.py --preset assignment --epochs 2 ;; esac
case $STEPS in *B*)
  step B 60 python3 -m resnet_lab bench train $ASSIGN --eval-every 0 --seeds 1 --device cuda ;; esac
case $STEPS in *H*)
  step H 180 python3 benchmarks/bench_degradation.py --suite quick --device cuda --runs /tmp/rl-degradation ;; esac

pack_runs
ls -la "$OUT" | tee -a "$OUT/log.txt"
