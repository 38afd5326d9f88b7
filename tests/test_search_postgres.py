"""Two search workers (separate processes) share one study on a real, throwaway PostgreSQL server.

The fixture runs ``initdb`` into a temporary folder and ``pg_ctl start`` on a free localhost port, as the
``postgres`` user when the tests run as root (PostgreSQL refuses to run as root). It skips, saying why, only when
the server binaries are missing (``scripts/setup.sh test`` apt-installs ``postgresql``).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parent.parent


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                    "(scripts/setup.sh test does)")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="resnet-lab-pg-"))
    if os.geteuid() == 0:
        # PostgreSQL will not run as root: run it as an unprivileged user that owns the data folder.
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None:
            pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists to run the server")
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        base.chmod(0o700)
        as_user = ["runuser", "-u", user, "--"] if shutil.which("runuser") else None
        if as_user is None:
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
    data, log, port = base / "data", base / "server.log", _free_port()

    def pg(*cmd, check=True):
        return subprocess.run(as_user + [str(bindir / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              timeout=120, check=check)

    try:
        pg("initdb", "-D", str(data), "-U", "lab", "--auth=trust", "--no-sync", "-E", "UTF8")
        # Unix socket in the data folder (no /var/run/postgresql needed); TCP on localhost only; fsync off: throwaway.
        opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        pg("pg_ctl", "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "") + (log.read_text() if log.exists() else "")
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start a throwaway PostgreSQL server: {detail[-2000:]}")
    try:
        yield f"postgresql+psycopg://lab@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_workers_share_one_study_without_losing_or_duplicating_trials(postgres_url, tiny_data_dir, tmp_path):
    import optuna

    from resnet_lab.experiments import search as S

    env = dict(os.environ, RESNET_LAB_DATA=str(tiny_data_dir), RESNET_LAB_CACHE=str(tmp_path / "cache"),
               RESNET_LAB_RUNS=str(tmp_path / "runs"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    n = 6
    cmd = [sys.executable, "-m", "resnet_lab", "search", "--storage", postgres_url, "--study", "pg-shared",
           "--population", "3", "--trials", str(n), "--preset", "quick-cpu", "--model", "resnet20", "--epochs", "1",
           "--subset", "100", "--test-subset", "50", "--batch-size", "25", "--json"]
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = []
    for w in workers:
        out, err = w.communicate(timeout=240)
        assert w.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))

    study = optuna.load_study(study_name="pg-shared", storage=S.open_storage(postgres_url, heartbeat=None))
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(n)), numbers  # unique and contiguous: none lost, none duplicated, no overshoot
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") and set(t.params) == {"lr_max", "weight_decay",
                                                                                     "momentum"} for t in trials)
    assert sum(sum(o["this_worker"].values()) for o in outs) == n
    workers_seen = {t.user_attrs["worker"] for t in trials}
    assert len(workers_seen) == 2, workers_seen  # both processes really worked on the one study
    assert all(o["trials"] == n and o["requested"] == n for o in outs)
    assert [t.user_attrs["generation"] for t in sorted(trials, key=lambda t: t.number)] == [0, 0, 0, 1, 1, 1]
