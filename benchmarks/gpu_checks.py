"""CUDA correctness before any GPU timing: one JSON line that says what works on the device.

    python benchmarks/gpu_checks.py --data .data/cifar10-jpeg.tar.gz                  # on the GPU machine
    python benchmarks/gpu_checks.py --data ../shared/data/cifar10-jpeg.tar.gz --device cpu --subset 200 \\
        --test-subset 100 --batch-size 64

The GPU machine has torch, torchvision, numpy and pillow but no pytest, so the checks that the test suite skips
without CUDA run here as plain code, each in its own try so one failure does not hide the next:

- ``augment``: the batched augmentation on CUDA equals the CPU path (tests/test_transforms.py's CUDA test);
- ``job_done``: a training through the app's job runtime (``JobRegistry`` + ``tasks.train``, a worker process,
  the ``cuda`` pool): it must end ``done`` with its epoch events back in the app process and its run on the device;
- ``job_stopped``: the same job, stopped once its first epoch is back, keeps its run, evaluated and marked ``stopped``;
- ``reload``: the finished run's checkpoint, saved from the device, loads with ``weights_only=True`` onto it.

``--device cpu`` runs the same checks here (a CPU machine) so the script itself is known to work before a lease.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from resnet_lab import tasks  # noqa: E402
from resnet_lab import transforms as T  # noqa: E402
from resnet_lab.jobs import JobRegistry  # noqa: E402
from resnet_lab.runs import RunStore  # noqa: E402


def check_augment(device: str) -> dict:
    images = (torch.rand(64, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    params = T.sample_params(len(images), torch.Generator().manual_seed(2))
    cpu = T.augment_batch(images, params, mean, std)
    dev = T.augment_batch(torch.from_numpy(images).to(device), params.to(device), mean, std)
    diff = float((dev.cpu() - cpu).abs().max())
    return {"ok": dev.device.type == torch.device(device).type and diff < 1e-5, "max_abs_diff": diff}


def _config(args, epochs: int) -> dict:
    # the assignment's network at the assignment's batch size: the job the Train page starts, shortened
    return {"preset": "assignment", "epochs": epochs, "peak_epoch": 1, "subset": args.subset,
            "test_subset": args.test_subset, "batch_size": args.batch_size, "device": args.device, "seed": 0}


def check_job(registry: JobRegistry, args, stop_after_first: bool) -> dict:
    t0 = time.perf_counter()
    epochs = 5 if stop_after_first else args.epochs  # room to stop in: the stop lands within one epoch
    job = registry.start("train", tasks.train, owner="gpu-check", device=args.device,
                         config=_config(args, epochs), source=args.data)
    if stop_after_first:
        deadline = time.monotonic() + args.timeout
        while not job.events("epoch") and job.active and time.monotonic() < deadline:
            time.sleep(0.2)
        job.stop()
    ended = job.wait(args.timeout)
    epochs_seen = [e["epoch"] for e in job.events("epoch")]
    start = (job.events("start") or [{}])[0]
    run = job.result
    out = {"status": job.status, "pool": job.device, "error": job.error, "epochs_seen": epochs_seen,
           "run_device": start.get("device"), "pipeline": start.get("pipeline"),
           "wall_s": round(time.perf_counter() - t0, 1)}
    if run is not None:
        out.update(run_id=run.id, run_status=run.status, test_acc=run.history[-1].get("test_acc")
                   if run.history else None)
    want = "stopped" if stop_after_first else "done"
    out["ok"] = bool(ended and job.status == want and epochs_seen and run is not None and run.status == want
                     # the start event names the device: "cpu (N cores, M threads)" or the GPU's own name
                     and str(start.get("device", "cpu")).startswith("cpu") == (args.device == "cpu"))
    if stop_after_first:
        out["ok"] = out["ok"] and len(epochs_seen) < epochs
    return out, run


def check_reload(run, device: str) -> dict:
    stored = RunStore(run.path.parent).get(run.id)
    model = stored.load_model(device)  # torch.load(..., weights_only=True) inside
    param = next(model.parameters())
    return {"ok": param.device.type == torch.device(device).type and stored.has_checkpoint,
            "param_device": str(param.device), "test_acc": stored.history[-1].get("test_acc")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("RESNET_LAB_DATA"), help="the CIFAR-10 archive or folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the job that must end done")
    p.add_argument("--subset", type=int, default=10000, help="training images of each job")
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=512, help="the assignment's; smaller for a CPU try")
    p.add_argument("--timeout", type=float, default=240, help="seconds each job may take")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "error": "no CUDA device here (use --device cpu to try the script)"}))
        return 2
    results: dict = {"device": args.device,
                     "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                     "torch": torch.__version__}
    os.environ.setdefault("RESNET_LAB_RUNS", tempfile.mkdtemp(prefix="gpu-check-runs-"))

    def attempt(name, fn, *a):
        try:
            value = fn(*a)
            results[name] = value[0] if isinstance(value, tuple) else value
            return value[1] if isinstance(value, tuple) else value
        except Exception as exc:  # each check on its own: report it and go on to the next
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                             "trace": traceback.format_exc(limit=4)[-1500:]}
            return None

    attempt("augment", check_augment, args.device)
    registry = JobRegistry(jobs_per_device=1, stop_grace_s=30)
    try:
        run = attempt("job_done", check_job, registry, args, False)
        attempt("job_stopped", check_job, registry, args, True)
    finally:
        registry.shutdown()
    if run is not None:
        attempt("reload", check_reload, run, args.device)
    else:
        results["reload"] = {"ok": False, "error": "no finished run to reload"}
    results["ok"] = all(results[k]["ok"] for k in ("augment", "job_done", "job_stopped", "reload"))
    print(json.dumps(results))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
