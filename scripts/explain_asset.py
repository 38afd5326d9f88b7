"""Measure the explanation methods on the shipped reference run and store the result for the Grad-CAM page:

    python scripts/explain_asset.py --data ../shared/data/cifar10-jpeg.tar.gz

runs ``python -m resnet_lab explain --run reference --sample 10 --sanity --data-randomisation --faithfulness
--json`` (10 test images, one per class) and writes its JSON with the command, the date and the machine to
``assets/explain/reference.json`` (``--output`` elsewhere). The page quotes it; nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["explain", "--run", "reference", "--sample", "10", "--sanity", "--data-randomisation", "--faithfulness",
        "--json"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the data source (default: $RESNET_LAB_DATA)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "assets" / "explain" / "reference.json"))
    args = parser.parse_args()
    env = {**os.environ, **({"RESNET_LAB_DATA": args.data} if args.data else {})}
    cmd = [sys.executable, "-m", "resnet_lab", "--threads", str(args.threads), *ARGS]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        return done.returncode
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cores = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    out = {"command": "python -m resnet_lab " + " ".join(ARGS[:-1]) + " --json",
           "date": time.strftime("%Y-%m-%d"),
           "hardware": f"CPU: {model or platform.processor() or platform.machine()}, {cores} cores, {args.threads} threads",
           "seconds": round(time.perf_counter() - t0, 1), "result": result}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({"output": args.output, "seconds": out["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
