"""N tiny training jobs through the app's job runtime on a Ray cluster of 1 node, then of 2 nodes: one JSON line.

    python benchmarks/bench_cluster.py                 # 6 jobs of 10 epochs, 1 CPU per node, one thread per job
    python benchmarks/bench_cluster.py --jobs 8 --epochs 3     # shorter jobs: the per-job start weighs more

Each cluster is started on this machine by ``tests/ray_cluster.py`` (``ray start --head`` and ``ray start
--address=…``, ``--num-cpus`` each), the registry is the app's (``JobRegistry`` with ``RESNET_LAB_RAY_ADDRESS``),
and every job is the Train page's (``resnet_lab.tasks.train``: resnet20, 200 synthetic images, ``--epochs``
epochs). ``wall_s``: from the first ``start`` to the last job's end, so it includes each job's process start on
its node (``max_calls=1``: a fresh process per job) and the run travelling back to the app's store.
``ratio``: 2-node wall time ÷ 1-node wall time (the issue's bar: ≤ 0.6). ``load``: the 1-minute load average
before each half; on a shared machine, report it with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ray_cluster import RayCluster  # noqa: E402


def one(nodes: int, n_jobs: int, epochs: int, archive: Path, tmp: Path) -> dict:
    from resnet_lab import tasks, training
    from resnet_lab.jobs import JobRegistry

    cluster = RayCluster(tmp / f"ray-{nodes}", nodes=nodes, cpus=1)
    try:
        os.environ.update(RESNET_LAB_RAY_ADDRESS=cluster.address, RESNET_LAB_RUNS=str(tmp / f"runs-{nodes}"),
                          RESNET_LAB_CACHE=str(tmp / "cache"))
        registry = JobRegistry(threads=1)
        totals = registry.cluster_resources(wait_s=120)
        cfg = training.preset("quick-cpu", model="resnet20", epochs=epochs, peak_epoch=0.5, batch_size=50,
                              subset=200, test_subset=100, pipeline="torch", seed=0).to_dict()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        jobs = [registry.start("train", tasks.train, owner=f"s{i}", config=cfg, source=str(archive))
                for i in range(n_jobs)]
        for job in jobs:
            job.wait(3600)
        wall = time.perf_counter() - t0
        failed = [j.error for j in jobs if j.status != "done"]
        placed = {e["node_id"][:8] for j in jobs for e in j.events("node")}
        registry.shutdown()
        return {"nodes": nodes, "cpus": totals, "wall_s": round(wall, 1),
                "jobs_per_min": round(60 * n_jobs / wall, 2), "nodes_used": len(placed), "failed": failed,
                "load": round(load, 2)}
    finally:
        cluster.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    from resnet_lab.data import make_class_folder_dataset

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = make_class_folder_dataset(tmp / "data", 20, 10, size=32, fmt="png", seed=0)
        archive = tmp / "tiny.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname="tiny")
        halves = [one(n, args.jobs, args.epochs, archive, tmp) for n in (1, 2)]
    print(json.dumps({"bench": "cluster", "jobs": args.jobs, "epochs": args.epochs, "one_node": halves[0],
                      "two_nodes": halves[1], "ratio": round(halves[1]["wall_s"] / halves[0]["wall_s"], 3),
                      "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
