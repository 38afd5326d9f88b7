"""A real two-node Ray cluster on localhost for the tests and the cluster benchmark: a head and a second node, each
a ``ray start --block`` process in its own process group (so killing the group is a node dying), each with its own
CPU count and a custom resource naming it (``node_a`` / ``node_b``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    def __init__(self, proc: subprocess.Popen, log: Path, name: str) -> None:
        self.proc, self.log, self.name = proc, log, name

    def kill(self) -> None:
        """The node dies at once (SIGKILL to its raylet, object store and workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


class RayCluster:
    """``RayCluster(tmp, nodes=2, cpus=1)``; ``.address``; ``.nodes``; ``.close()`` (kills every process)."""

    def __init__(self, tmp: Path, nodes: int = 2, cpus: int = 1, env: dict | None = None,
                 port: int | None = None) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray = str(Path(sys.executable).parent / "ray")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=os.pathsep.join(
            [str(ROOT), str(ROOT / "tests")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
            OMP_NUM_THREADS="1", **(env or {}))
        self.nodes: list[RayNode] = []
        try:
            self._start(ray, ["--head", f"--port={self.port}", "--include-dashboard=false",
                              "--node-ip-address=127.0.0.1"],
                        cpus, "node_a")
            self._wait(1)
            for i in range(1, nodes):
                name = f"node_{chr(ord('a') + i)}"
                self._start(ray, [f"--address={self.address}", "--node-ip-address=127.0.0.1"], cpus, name)
                self._wait(i + 1)
        except BaseException:
            self.close()
            raise

    def _start(self, ray: str, args: list, cpus: int, name: str) -> None:
        log = self.tmp / f"{name}.log"
        # A small object store: the tests send a few MB, and a container's /dev/shm may be small.
        proc = subprocess.Popen([ray, "start", "--block", f"--num-cpus={cpus}", "--num-gpus=0",
                                 "--object-store-memory=200000000",
                                 f"--resources={{\"{name}\": 1}}", "--disable-usage-stats", *args],
                                env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(RayNode(proc, log, name))

    def node_ids(self) -> dict[str, str]:
        """{"node_a": node id, ...}: each live node by the custom resource that names it."""
        out = subprocess.run([sys.executable, "-c", (
            "import json,logging,ray; ray.init(address=%r, logging_level=logging.ERROR, log_to_driver=False);"
            "print(json.dumps({k: n['NodeID'] for n in ray.nodes() if n['Alive'] for k in n['Resources'] "
            "if k.startswith('node_') and ':' not in k}))") % self.address],
            env=self.env, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def alive_nodes(self) -> int:
        out = subprocess.run([sys.executable, "-c", (
            "import ray,logging; ray.init(address=%r, logging_level=logging.ERROR, log_to_driver=False);"
            "print(sum(1 for n in ray.nodes() if n['Alive']))") % self.address],
            env=self.env, capture_output=True, text=True, timeout=120)
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def _wait(self, n: int, timeout_s: float = 180) -> None:
        """Until the n-th node's ``ray start`` says the runtime started (it prints that once the node has joined)."""
        node = self.nodes[n - 1]
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start for {node.name} ended: {node.log.read_text()[-2000:]}")
            if "Ray runtime started" in node.log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Ray node {node.name} did not start in {timeout_s:.0f} s")

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        self.nodes = []
