"""Where things live: data source, caches, runs, device. Environment variables override defaults."""

from __future__ import annotations

import math
import os
from pathlib import Path

DEFAULT_DATA = "cifar10"


def resolve_data_source(data: str | None = None) -> str:
    """Explicit argument, else ``RESNET_LAB_DATA``, else torchvision's CIFAR-10 (``cifar10``)."""
    if data is not None and str(data).strip():
        return str(data).strip()
    env = os.environ.get("RESNET_LAB_DATA", "").strip()
    return env or DEFAULT_DATA


def cache_dir() -> Path:
    path = Path(os.environ.get("RESNET_LAB_CACHE") or Path.home() / ".cache" / "resnet_lab")
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    return Path(os.environ.get("RESNET_LAB_RUNS") or "runs")


DEVICE_CHOICES = "auto, cpu or cuda[:N]"


def parse_device(device) -> str:
    """The one device parser of every command and config: 'auto', 'cpu', 'cuda' or 'cuda:N', normalised.
    Anything else (tpu, mps, cuda:x, a blank) is a ValueError saying what is accepted; None means auto."""
    import re

    if device is None:
        return "auto"
    text = str(device).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", text):
        raise ValueError(f"device must be {DEVICE_CHOICES}; got {str(device)[:40]!r}")
    return text


def device_problem(device) -> str | None:
    """Why a device setting cannot be used here (not a device name, or CUDA where there is none); None if it can."""
    try:
        text = parse_device(device or "auto")
    except ValueError as exc:
        return str(exc)
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "CUDA is not available on this machine; use auto or cpu"
    return None


def resolve_device(device: str | None = None):
    """A torch.device for a device setting ('' and None mean auto); ValueError with the fix otherwise."""
    import torch

    text = "auto" if device is None or not str(device).strip() else parse_device(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{text}' was asked for but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{text}' does not exist: this machine has {torch.cuda.device_count()} "
                             f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def device_description() -> dict:
    """What the user is running on, for the Home page and ``info``."""
    import torch

    info = {"cuda": torch.cuda.is_available(), "cpu_cores": os.cpu_count(), "torch": torch.__version__}
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["device"] = "cpu"
    return info


# -- class-server settings ---------------------------------------------------------------------------------
# One app process can serve a whole class. These settings lock what students could otherwise misuse (a path on the
# server, hour-long trainings) and size the job queue. All are off by default: a single user on a laptop gets the
# app as it always was. Each comes from the environment (RESNET_LAB_<NAME>) or, in the app, from the
# ``[resnet_lab]`` table of .streamlit/secrets.toml (lower-case names); the environment wins.
#
# They fail closed: one malformed value (or an unknown name in the table, which is a typo of one) is an error that
# names every bad setting and its fix, never a silent fall-back to the defaults, which would drop the data lock, the
# caps and the teacher role all at once.

SETTING_NAMES = {
    "lock_data": str,          # a data source every page uses; the sidebar path box is hidden
    "max_epochs": int,         # caps on what a training / LR test / experiment may ask for
    "max_batch_size": int,
    "max_params": float,       # parameters of a model (e.g. 3e6, or "3M")
    "jobs_per_device": int,    # jobs running at once per device (the rest wait FIFO); default 1
    "job_threads": int,        # intra-op threads per job; default cores ÷ running jobs (the test suite sets 1)
    "teacher_password": str,   # enables teacher mode (see every run and job, delete and stop any) without sign-in
    "teachers": list,          # with sign-in ([auth]): the users (e-mail or subject) who are teachers
    "stop_grace_s": float,     # after Stop, seconds a job may take to end cleanly before it is terminated
    "search_storage": str,     # the study database of a class server (default: search.db in the runs folder)
    "model_files": bool,       # students may load their own model files (their code runs in job workers only)
    "ray_address": str,        # run jobs on this Ray cluster (auto, or the head's host:port); unset: here
}
# What each setting expects, for the message of a malformed one.
SETTING_FORMS = {
    "lock_data": "a data source (an archive, a class-folder directory or cifar10)",
    "max_epochs": "a whole number > 0, e.g. 10",
    "max_batch_size": "a whole number > 0, e.g. 512",
    "max_params": "a number > 0, e.g. 3e6 or 3M",
    "jobs_per_device": "a whole number > 0, e.g. 1",
    "job_threads": "a whole number > 0, e.g. 1",
    "teacher_password": "a non-empty text",
    "teachers": "a list of e-mail addresses or subjects (in the environment: comma-separated)",
    "stop_grace_s": "a number of seconds > 0, e.g. 30",
    "search_storage": "a SQLAlchemy URL, e.g. postgresql+psycopg://user:password@host:5432/dbname",
    "model_files": "true or false",
    "ray_address": "auto, or host:port of a running Ray cluster's head, e.g. head.example.org:6379 (docs/class-server.md)",
}
# The settings that make an app a class server (several students): then no page takes a path from a student.
CLASS_SERVER_SETTINGS = ("lock_data", "max_epochs", "max_batch_size", "max_params", "teacher_password", "teachers",
                         "search_storage")
DEFAULT_JOBS_PER_DEVICE = 1
DEFAULT_STOP_GRACE_S = 30.0


class SettingsError(ValueError):
    """One or more class-server settings are malformed. ``problems`` maps each setting to what is wrong with it."""

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


def setting_source(name: str) -> str:
    """Where a setting is given: 'RESNET_LAB_MAX_EPOCHS (environment) or max_epochs in [resnet_lab] of secrets.toml'."""
    return f"RESNET_LAB_{name.upper()} (environment) or {name} in [resnet_lab] of .streamlit/secrets.toml"


def _parse(name: str, kind, raw):
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if kind is list:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise SettingsError(f"{name} = {str(raw)[:60]!r} is not a list of names")
        items = [i.strip() for i in items if i.strip()]
        return items or None
    if kind is str:
        if not isinstance(raw, str):
            raise SettingsError(f"{name} = {str(raw)[:60]!r} is not text")
        return raw.strip()
    if kind is bool:  # only these words: anything else is a typo, refused (fail closed), never read as "on"
        words = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                 "off": False}
        value = raw if isinstance(raw, bool) else words.get(str(raw).strip().lower())
        if value is None:
            raise SettingsError(f"{name} = {str(raw)[:60]!r} is not true or false")
        return value
    if isinstance(raw, bool):
        raise SettingsError(f"{name} = {raw!r} is not a number")
    text = str(raw).strip().lower().replace("_", "")
    scale = 1.0
    if kind is float and text[-1:] in ("k", "m"):
        scale, text = (1e3 if text[-1] == "k" else 1e6), text[:-1]
    try:
        value = kind(float(text) * scale) if kind is float else int(text)
    except (ValueError, OverflowError):
        raise SettingsError(f"{name} = {str(raw)[:60]!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be positive, got {str(raw)[:60]!r}")
    return value


def class_settings(secrets=None, environ=None) -> dict:
    """The class-server settings as a dict of SETTING_NAMES (None = not set), env over ``secrets`` (a mapping,
    e.g. ``st.secrets.get("resnet_lab")``). ``jobs_per_device`` and ``stop_grace_s`` always have a value.

    Raises SettingsError naming *every* malformed setting (and unknown names in ``secrets``) with what it expects
    and where it is set; the caller stops rather than carry on without the locks (fail closed)."""
    environ = os.environ if environ is None else environ
    secrets = dict(secrets or {})
    out, problems = {}, {}
    for name in sorted(set(secrets) - set(SETTING_NAMES)):
        problems[name] = (f"{name} in [resnet_lab] of .streamlit/secrets.toml is not a setting (a typo?); the "
                          f"settings are {', '.join(SETTING_NAMES)}")
    for name, kind in SETTING_NAMES.items():
        raw = environ.get(f"RESNET_LAB_{name.upper()}")
        given = secrets.get(name)
        try:
            if name in secrets and isinstance(given, str) and not given.strip():
                # `lock_data = ""` would read as "no lock": a key that is there must say something
                raise SettingsError(f"{name} is empty in [resnet_lab] of .streamlit/secrets.toml")
            # An empty or blank variable is unset (shells leave them behind); it never hides the secrets' value.
            out[name] = _parse(name, kind, raw if raw is not None and raw.strip() else given)
            if name == "ray_address" and out[name] is not None and _ray_address_problem(out[name]):
                raise SettingsError(f"{name} = {_ray_address_problem(out[name])}")
        except SettingsError as exc:
            problems[name] = f"{exc}: set {setting_source(name)} to {SETTING_FORMS[name]}, or remove it"
    if problems:
        raise SettingsError("malformed class-server settings: " + "; ".join(problems.values()), problems)
    out["jobs_per_device"] = out["jobs_per_device"] or DEFAULT_JOBS_PER_DEVICE
    out["stop_grace_s"] = out["stop_grace_s"] or DEFAULT_STOP_GRACE_S
    return out


def _ray_address_problem(address: str) -> str | None:
    """Checked here, where settings are read, without importing Ray: auto, or the head's host:port. Not ray://
    (Ray Client): each job's driver runs beside the app and joins the cluster directly (resnet_lab.jobs.cluster)."""
    text = address.strip()
    if text == "auto":
        return None
    if text.startswith("ray://"):
        return f"{text[:60]!r}: ray:// (Ray Client) is not used; give the head's host:port (ray start's --port, 6379)"
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " /@"):
        return f"{text[:60]!r} is not auto or host:port"
    return None


def is_class_server(settings: dict) -> bool:
    """True when any class-server setting is on: several students share this app, so no page takes a path (data,
    study storage) from a student and no server path is shown to one."""
    return any(settings.get(name) for name in CLASS_SERVER_SETTINGS)


def model_files_allowed(settings: dict) -> bool:
    """May a student load a model file (its code runs)? On a single-user app yes; on a class server only when the
    teacher set ``model_files`` to true, and then only in job worker processes (``models.files.forbid_here``)."""
    if settings.get("model_files") is False:  # said no: no, on any server
        return False
    return not is_class_server(settings) or settings.get("model_files") is True


def check_caps(settings: dict, *, epochs=None, batch_size=None, params=None) -> dict[str, str]:
    """Messages for values over the class-server caps, keyed like the form fields ({} when within them)."""
    out = {}
    cap = settings.get("max_epochs")
    if cap and isinstance(epochs, (int, float)) and epochs > cap:
        out["epochs"] = f"this class server allows at most {cap} epochs (you asked for {epochs:g})"
    cap = settings.get("max_batch_size")
    if cap and isinstance(batch_size, (int, float)) and batch_size > cap:
        out["batch_size"] = f"this class server allows batches of at most {cap} images (you asked for {batch_size:g})"
    cap = settings.get("max_params")
    if cap and isinstance(params, (int, float)) and params > cap:
        out["model"] = (f"this class server allows models of at most {cap / 1e6:.2g} M parameters; this one has "
                        f"{params / 1e6:.2g} M")
    return out


def fit_to_caps(settings: dict, *, epochs=None, peak_epoch=None, batch_size=None) -> tuple[dict, list[str]]:
    """A preset's or suite's defaults cut to the class-server caps, and a sentence per cut: the defaults a page
    offers must start, not greet the student with a refusal. Epochs shrink with the warm-up kept in proportion
    (the peak moves to the same fraction of the run); batches shrink to the cap. Only given values are returned."""
    out, notes = {}, []
    cap = settings.get("max_epochs")
    if cap and isinstance(epochs, (int, float)) and epochs > cap:
        out["epochs"] = int(cap)
        note = f"this class server allows at most {cap} epochs, so the default {epochs:g} became {cap}"
        if isinstance(peak_epoch, (int, float)):
            out["peak_epoch"] = round(peak_epoch * cap / epochs, 3)
            note += f" (LR peak at epoch {out['peak_epoch']:g} instead of {peak_epoch:g}: the same share of the run)"
        notes.append(note)
    cap = settings.get("max_batch_size")
    if cap and isinstance(batch_size, (int, float)) and batch_size > cap:
        out["batch_size"] = int(cap)
        notes.append(f"this class server allows batches of at most {cap} images, so the default {batch_size:g} "
                     f"became {cap}")
    return out, notes


def cpu_cores() -> int:
    """Cores this process may use (its affinity mask, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
