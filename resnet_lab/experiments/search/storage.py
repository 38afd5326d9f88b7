"""Where studies live: Optuna's RDB storage (SQLite by default, PostgreSQL on a class server), URLs with their secrets
masked, one storage object per URL, and the studies it holds.
"""

from __future__ import annotations

import os
import re
import threading
import time
import warnings
from pathlib import Path

from resnet_lab.config import runs_dir
from resnet_lab.experiments.search.space import (
    CONNECT_TIMEOUT_S,
    HEARTBEAT_S,
    OWNER_ATTR,
    OWNER_NAME_ATTR,
    SearchError,
    SETTINGS_ATTR,
)

# -- storage ------------------------------------------------------------------------------------------


def default_storage() -> str:
    return f"sqlite:///{(runs_dir() / 'search.db').resolve()}"


def normalize_url(url: str | None) -> str:
    """None -> the default SQLite file; a bare path -> sqlite:///<abs path>; ``postgresql://`` -> psycopg 3."""
    if url is None or not str(url).strip():
        return default_storage()
    url = str(url).strip()
    if "://" not in url:  # a file path
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        # SQLAlchemy's plain "postgresql://" means psycopg2; this project installs psycopg 3.
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return url


def mask_url(url: str) -> str:
    """The URL with everything between ``//`` and the last ``@`` replaced by ***, for messages and the page.
    A password may itself hold '@', ':' or '/', so nothing of the credentials part is kept (the user neither)."""
    return re.sub(r"://.*@", "://***@", str(url), flags=re.DOTALL)


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's error message) without any piece of the URL's password: a driver that splits
    ``user:pa@ss@host`` at the first '@' quotes the rest of the password as part of the host name."""
    match = re.search(r"://(.*)@", str(url), flags=re.DOTALL)
    if not match or ":" not in match.group(1):
        return text
    password = match.group(1).split(":", 1)[1]
    pieces = {password, *re.split(r"[@:/]", password)}
    for piece in sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Several local workers write one file: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql") or url.startswith("mysql"):
        # Fail in seconds, not minutes, when the server is unreachable; recycle dropped connections.
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


_STORAGES: dict = {}
_STORAGES_LOCK = threading.Lock()


def sqlite_path(url: str | None) -> Path | None:
    """The file of a SQLite storage URL (None for a server database or an in-memory one)."""
    url = normalize_url(url)
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def storage_inside(url: str | None, root: str | Path) -> bool:
    """True when ``url`` is a SQLite file inside the folder ``root`` (symlinks resolved, no ``..`` escape): the only
    storages a student may name on a class server, besides the one the teacher configured."""
    path = sqlite_path(url)
    if path is None:
        return False
    try:
        return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(root)))
    except (OSError, ValueError):
        return False


def open_storage(url: str | None = None, heartbeat: int | None = HEARTBEAT_S, create: bool = True):
    """An Optuna RDBStorage for ``url``, or SearchError saying why it cannot be reached (within seconds).

    A SQLite file is created only with ``create`` (starting or joining a study; listing and reading never write),
    and only in a folder that exists: a mistyped path must not leave folders behind. The one folder made on
    demand is the runs folder of the default storage, which is the project's own."""
    url = normalize_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise SearchError(f"there is no study database at {mask_url(url)} yet")
        if create and not path.parent.is_dir():
            if path == sqlite_path(default_storage()):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SearchError(f"cannot create the runs folder for the study file: {exc.strerror or exc}")
            else:
                raise SearchError(f"the folder of the study file {path} does not exist: create it first, or give a "
                                  "file in an existing folder (the default is search.db in the runs folder)")
    kwargs = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": int(heartbeat), "grace_period": 2 * int(heartbeat)}
    key = (url, heartbeat)
    with _STORAGES_LOCK:
        if key in _STORAGES:
            return _STORAGES[key]
    try:
        storage = _rdb_storage(url, kwargs)
    except ImportError as exc:
        raise SearchError(f"no database driver for {mask_url(url)}: {exc.__cause__ or exc}. For PostgreSQL use "
                          "postgresql+psycopg://user:password@host:5432/dbname (pip install 'psycopg[binary]')")
    except Exception as exc:  # sqlalchemy OperationalError/ArgumentError, psycopg errors, ...
        reason = scrub_secrets(str(getattr(exc, "orig", None) or exc), url).strip().splitlines()
        raise SearchError(
            f"cannot open the study storage {mask_url(url)}: {reason[0] if reason else type(exc).__name__}. "
            "Check the URL (dialect+driver://user:password@host:port/dbname), that the database server is running "
            "and reachable from this machine (host, port, firewall, pg_hba.conf), and the user name and password."
        ) from None
    with _STORAGES_LOCK:
        # One engine (and connection pool) per URL for the whole process: the app reopens studies on every rerun.
        return _STORAGES.setdefault(key, storage)


def _rdb_storage(url: str, kwargs: dict):
    import optuna
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat is "experimental"
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers started together on an empty database race to create Optuna's tables ("duplicate key",
            # "already exists"); the loser finds them on the next try. Connection errors are not retried.
            if attempt == 4:
                raise
            time.sleep(0.3 * (attempt + 1))


def list_studies(storage: str | None = None) -> list[dict]:
    """Every study in the storage: name, owner, settings, trial counts by state, best accuracy, start time. A SQLite
    file that does not exist yet holds no study (and is not created by looking)."""
    import optuna

    path = sqlite_path(storage)
    if path is not None and not path.exists():
        return []
    st = open_storage(storage, heartbeat=None, create=False)
    out = []
    for s in optuna.study.get_all_study_summaries(st, include_best_trial=True):
        counts = {}
        for t in optuna.load_study(study_name=s.study_name, storage=st).get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        out.append({"name": s.study_name, "settings": s.user_attrs.get(SETTINGS_ATTR),
                    "owner": s.user_attrs.get(OWNER_ATTR), "owner_name": s.user_attrs.get(OWNER_NAME_ATTR),
                    "n_trials": s.n_trials, "states": counts,
                    "best": s.best_trial.value if s.best_trial is not None else None,
                    "started": s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None})
    return sorted(out, key=lambda r: r["started"] or "", reverse=True)


MAX_STUDY_NAME = 100


def study_name_problem(name) -> str | None:
    """Why ``name`` cannot name a study ('' would silently be the default study in some callers); None if fine."""
    if not isinstance(name, str) or not name.strip():
        return "the study needs a name (--study NAME; any text, e.g. lr-wd)"
    if len(name.strip()) > MAX_STUDY_NAME:
        return f"a study name may have at most {MAX_STUDY_NAME} characters (got {len(name.strip()):,})"
    if any(not ch.isprintable() for ch in name):
        return "a study name may not hold control characters"
    return None
