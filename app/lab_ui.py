"""Streamlit helpers shared by every page of the explorer.

Pages import this as ``import lab_ui`` (Streamlit puts ``app/`` on ``sys.path``). The library
(``resnet_lab``) never imports streamlit; everything UI-specific that more than one page needs lives here:

- ``data_source()``                  the data source chosen in the sidebar (or ``RESNET_LAB_DATA`` / ``cifar10``)
- ``load_data(source, subset, test_subset, seed)``  the Dataset, decoded once per process (progress bar the first time)
- ``data_or_stop(subset, test_subset)``  the Dataset, or the DataError and how to fix it, then stop the page
- ``data_or_none(subset, test_subset)``  the same, but returns None so the rest of the page still draws
- ``show_data_error(error)`` / ``md_escape(text)``  a DataError shown readably (paths and globs taken literally)
- ``ensure_decoded(source)``         a source never decoded yet is decoded by a worker (progress shown), not here
- ``job_registry()``                 the one JobRegistry shared by all sessions (training, LR test, experiments)
- ``computed(kind, fn, title, key, **kwargs)``  a short computation's result, made once in a worker for every session
- ``settings()`` / ``settings_problems()``  class-server settings (fail closed: Home.py stops on a malformed one)
- ``session_owner()``                who this session is: the signed-in user ([auth]), else a key of the link's ``?sid=``
- ``display_name()`` / ``is_teacher()`` / ``class_server()``  the name, teacher mode, whether students share the app
- ``owner_shown(owner)`` / ``redacted_config(config)``  owners as "me" / a name / "another student", never a key
- ``session_job(kind, key)``         this session's newest job of a kind (also after a reload)
- ``new_events(job, key)``           a job's events, read incrementally (only what arrived since the last poll)
- ``queue_note(job)``                "2nd in line, ~3 min" and a Cancel button while a job waits for a free slot
- ``owner_memo(name)``               a per-owner dict that survives reloads (e.g. the LR Finder's curves and pick)
- ``visible_runs(runs, key)``        "mine" / "everyone's" switch over a list of runs; ``may_delete(run)``
- ``has_cuda()`` / ``device_info()`` / ``device_banner()``  what hardware this is, said honestly
- ``page_intro(title, idea, try_, notice)``  the title and the short lesson every page starts with
"""

from __future__ import annotations

import hmac
import re
import threading
import uuid

import streamlit as st

from resnet_lab import access, tasks
from resnet_lab.config import class_settings, device_description, is_class_server
from resnet_lab.config import model_files_allowed as model_files_allowed_by
from resnet_lab.config import resolve_data_source, SettingsError
from resnet_lab.data import DataError, load_dataset, undecoded_bytes
from resnet_lab.jobs import JobRegistry, SharedResults
from resnet_lab.models import files as model_files

DATA_SOURCE_KEY = "data_source"  # the sidebar text input in Home.py
OWNER_KEY = "lab_session_owner"
SHARED_ARCHIVE_HINT = "../shared/data/cifar10-jpeg.tar.gz"


SID_PARAM, NAME_PARAM = "sid", "name"
TEACHER_KEY = "lab_teacher"


def _secrets_section(name: str) -> dict:
    """One table of .streamlit/secrets.toml as a dict ({} when there is no secrets file: the laptop case). A secrets
    file that exists but cannot be parsed is a SettingsError, not "no settings": that would drop every lock."""
    try:
        section = st.secrets.get(name, {})
    except Exception as exc:
        from pathlib import Path

        from streamlit import config as st_config

        if not any(Path(p).exists() for p in st_config.get_option("secrets.files") or ()):
            return {}
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise SettingsError(f"the secrets file cannot be read ({reason})",
                            {"secrets.toml": f".streamlit/secrets.toml cannot be read ({reason}): fix its TOML"}) from None
    section = section.to_dict() if hasattr(section, "to_dict") else section
    if not isinstance(section, dict):  # `auth = "x"` instead of an [auth] table: not "no sign-in"
        raise SettingsError(f"{name} in secrets.toml is not a table",
                            {name: f"{name} in .streamlit/secrets.toml must be a table ([{name}] with its keys), "
                                   f"not {type(section).__name__}"})
    return section


def settings() -> dict:
    """Class-server settings (resnet_lab.config.class_settings): environment over ``[resnet_lab]`` in
    .streamlit/secrets.toml. Raises SettingsError when one is malformed: Home.py stops the whole app with a page
    naming it (fail closed), so no page ever runs without the locks and caps that were asked for."""
    return class_settings(_secrets_section("resnet_lab"))


def settings_problems() -> dict[str, str]:
    """Setting -> what is wrong with it, for Home.py's stop page: the class-server settings and the sign-in set-up
    ([auth]); {} when all are well-formed."""
    try:
        s = settings()
        return auth_problems(s)
    except SettingsError as exc:
        return exc.problems or {"settings": str(exc)}


# -- identity ------------------------------------------------------------------------------------------------
# With [auth] in secrets.toml the class server signs students in through an OpenID Connect provider (Streamlit's
# st.login): the owner of a run or job is the signed-in user, kept across reloads and tabs by Streamlit's cookie,
# and the teachers are listed in the ``teachers`` setting. Without it, identity is a link: the random ``sid`` in the
# URL, of which only a one-way key is ever stored or shown (resnet_lab.access).

def _has_section(name: str) -> bool:
    try:
        return name in st.secrets
    except Exception:  # no secrets file
        return False


def auth_configured() -> bool:
    """True when secrets.toml has an [auth] section, even an empty one: the app then requires sign-in. An unreadable
    secrets file counts as configured (fail closed: Home.py has already stopped on it)."""
    try:
        return bool(_secrets_section("auth")) or _has_section("auth")
    except SettingsError:
        return True


def _providers(auth: dict) -> list[str | None]:
    """The provider names of [auth]: None for a single provider in [auth] itself, else each [auth.NAME]."""
    if auth.get("client_id"):
        return [None]
    return [name for name, value in auth.items() if isinstance(value, dict) and value.get("client_id")]


def auth_problems(s: dict | None = None) -> dict[str, str]:
    """What keeps the configured sign-in from working (checked before any page runs, so a half-done [auth] stops
    the app instead of letting everyone in); {} when sign-in is off or complete."""
    auth = _secrets_section("auth")
    s = s if s is not None else {}
    if not auth and _has_section("auth"):
        return {"auth": "[auth] in .streamlit/secrets.toml is empty: give it redirect_uri, cookie_secret and a "
                        "provider (docs/class-server.md), or remove it"}
    if not auth:
        if s.get("teachers"):
            return {"teachers": "teachers is set, but sign-in is not configured: add an [auth] section to "
                                ".streamlit/secrets.toml (docs/class-server.md), or use teacher_password instead"}
        return {}
    problems = {}
    for key in ("redirect_uri", "cookie_secret"):
        if not str(auth.get(key) or "").strip():
            problems[f"auth.{key}"] = f"[auth] in .streamlit/secrets.toml has no {key} (docs/class-server.md)"
    if len(str(auth.get("cookie_secret") or "")) < 32 and "auth.cookie_secret" not in problems:
        problems["auth.cookie_secret"] = ("cookie_secret in [auth] is shorter than 32 characters: use a long random "
                                          "string (python -c 'import secrets; print(secrets.token_hex(32))')")
    providers = _providers(auth)
    if not providers:
        problems["auth.provider"] = ("[auth] names no provider: give client_id, client_secret and "
                                     "server_metadata_url in [auth] or in an [auth.NAME] section")
    for name in providers:
        section = auth if name is None else auth[name]
        for key in ("client_secret", "server_metadata_url"):
            if not str(section.get(key) or "").strip():
                where = "[auth]" if name is None else f"[auth.{name}]"
                problems[f"auth.{key}"] = f"{where} in .streamlit/secrets.toml has no {key}"
    try:
        import authlib  # noqa: F401  (st.login needs it)
    except ImportError:
        problems["auth.authlib"] = "sign-in needs the Authlib package: pip install -r requirements.txt"
    if not s.get("teachers"):
        problems["teachers"] = ("sign-in is configured but no teacher is: set teachers = [\"you@school.edu\"] in "
                                "[resnet_lab] of .streamlit/secrets.toml (or RESNET_LAB_TEACHERS)")
    return problems


def auth_providers() -> list[str | None]:
    return _providers(_secrets_section("auth"))


def signed_in_claims() -> dict | None:
    """The signed-in user's ID-token claims (e-mail, name, sub), or None when nobody is signed in."""
    if not auth_configured():
        return None
    user = st.user
    if not user.get("is_logged_in"):
        return None
    return {k: user.get(k) for k in ("email", "email_verified", "name", "sub", "preferred_username")}


def data_locked() -> bool:
    """True on a class server (any class-server setting, or sign-in): no page shows a path box or accepts a path;
    the data is ``lock_data``, else the server's ``RESNET_LAB_DATA``, else ``cifar10``."""
    return class_server()


def data_source() -> str:
    """The data source every page uses: on a class server the locked one (or the server's default), else the
    sidebar setting, else ``RESNET_LAB_DATA``, else ``cifar10``."""
    if class_server():
        return settings().get("lock_data") or resolve_data_source(None)
    return resolve_data_source(st.session_state.get(DATA_SOURCE_KEY))


@st.cache_resource(show_spinner=False, max_entries=8)
def load_data(source: str, subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for ``source``, shared by all sessions (one decoded copy in memory per source).

    Subsets are cut from the full set (class-balanced, seeded), so every page sees the same images for the same
    arguments. Raises ``resnet_lab.data.DataError``; errors are not cached, so a fixed path works on the next run.
    """
    if subset is not None or test_subset is not None:
        return load_data(source).subset(train=subset, test=test_subset, seed=seed)

    # Created inside the cached function on purpose: Streamlit replays a cached function's elements on a cache
    # hit, and an element made outside it cannot be replayed. On a hit the bar appears and is emptied at once.
    bar = st.progress(0.0, text=f"Reading {source} …")
    last = [-1]

    def progress(done: int, total: int, message: str = "") -> None:
        percent = int(100 * done / max(total, 1))
        if percent != last[0]:  # at most ~100 UI updates, however many images there are
            last[0] = percent
            bar.progress(min(percent, 100) / 100, text=message or f"Decoding images … {done:,}/{total:,}")

    try:
        return load_dataset(source, progress=progress)
    finally:
        bar.empty()


def md_escape(text: str) -> str:
    """Plain text (paths, globs like train/<class>/*.png) shown literally inside Streamlit markdown."""
    for ch in "\\`*_[]#|~$":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", "  \n")  # keep the message's line breaks


def show_data_error(error: Exception | str) -> None:
    """The DataError text (which names the path, the expected layout and both fixes) plus the fix in the app. On a
    class server the student can fix nothing (the source is locked): the message says whom to tell, no path."""
    if class_server():
        st.error(f"**The class server's data could not be loaded.**\n\n{md_escape(public(error))}\n\n"
                 "Tell the teacher: the data source is set on the server (RESNET_LAB_LOCK_DATA).",
                 icon=":material/folder_off:")
        return
    st.error(
        f"**The data could not be loaded.**\n\n{md_escape(str(error))}\n\n"
        f"**In the app:** type another source in the sidebar box *Data source* — a class-folder directory, "
        f"a `.tar.gz` such as `{SHARED_ARCHIVE_HINT}`, or `cifar10` (downloads once, needs internet). "
        f"To make it the default, start the app with `RESNET_LAB_DATA=<path> make app`.",
        icon=":material/folder_off:",
    )


INLINE_DECODE_BYTES = 8 * 2**20  # a small folder (a few thousand PNGs) decodes here faster than a worker starts


def ensure_decoded(source: str) -> None:
    """Make sure loading ``source`` only reads decoded arrays. A large source never decoded on this server (the JPEG
    archive: minutes of decoding) is decoded by a worker in the quick lane, once for every session that asks: the
    page shows its progress, stops here and reruns by itself when the cache is written. A small one (under
    ``INLINE_DECODE_BYTES``) is decoded by the loader in well under a second. A source that cannot be read at all
    raises its DataError (quickly, or from the worker's answer)."""

    decoded = server_state("decoded", set)  # sources seen decoded (undecoded_bytes lists a folder source's files)
    if source in decoded:
        return
    todo = undecoded_bytes(source)
    if todo == 0:
        decoded.add(source)
        return
    if todo is None or todo < INLINE_DECODE_BYTES:
        return  # unreadable (the loader says why at once) or small (the loader decodes it at once)
    shown = "the class server's data" if class_server() else source
    result = computed("decode", tasks.decode, f"decoding {shown} (once for this server)", "decode", source=source)
    if result is None:
        st.stop()
    if result.get("error"):
        shared_results().forget("decode", tasks.decode, source=source)  # a fixed source is tried again next time
        raise DataError(**result["error"])
    decoded.add(source)


def data_or_none(subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for the current source, or None after showing what went wrong and how to fix it."""

    source = data_source()
    try:
        ensure_decoded(source)
        data = load_data(source, subset, test_subset, seed)
    except DataError as exc:
        show_data_error(exc)
        return None
    for note in data.notes:  # loaded, but worth knowing (class imbalance, skipped oversized images ...)
        st.warning(md_escape(public(note)), icon=":material/warning:")
    return data


def data_or_stop(subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for the current source; if it cannot be loaded, explain why and stop this page (no traceback)."""
    data = data_or_none(subset, test_subset, seed)
    if data is None:
        st.stop()
    return data


@st.cache_resource(show_spinner=False)
def preload_page_imports() -> tuple[str, ...]:
    """Import the libraries that pages and Streamlit's own elements import lazily (pandas for tables, plotly for
    charts) once, before any page runs. Two sessions' script threads importing pandas at the same moment saw a
    "partially initialized module 'pandas'" in a class; st.cache_resource runs this once and makes every other
    session wait for it. Heavy, page-specific libraries (captum, optuna) stay lazy: Home must come up fast."""
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import plotly.subplots  # noqa: F401

    return ("pandas", "plotly.graph_objects", "plotly.subplots")


# -- state of the whole server ---------------------------------------------------------------------------------
# The job registry, the owners' memos and the teacher password's back-off live in this module, not in
# st.cache_resource: any browser can clear Streamlit's caches for the whole server (its "clear_cache" message, which
# the app menu sends and a student can send from the developer tools), and that must not forget every running job,
# reset the password back-off or drop everyone's LR curves. Caches hold only what can be computed again.
_SERVER: dict = {}
_SERVER_LOCK = threading.RLock()  # re-entrant: a factory may ask for another server object


def server_state(name: str, factory):
    """The process-wide object ``name``, made once by ``factory()`` (under a lock: two sessions make one)."""
    with _SERVER_LOCK:
        if name not in _SERVER:
            _SERVER[name] = factory()
        return _SERVER[name]


def reset_server_state() -> None:
    """Forget the server's state (tests do between tests; the app never does)."""
    with _SERVER_LOCK:
        _SERVER.clear()


def _new_registry():
    import os

    # A warm spare worker (torch already imported) makes a job start at once instead of after seconds of imports.
    # RESNET_LAB_WARM_SPARE=0 turns it off (the test suite does: every test gets a fresh registry).
    warm = os.environ.get("RESNET_LAB_WARM_SPARE", "1") != "0"
    # The settings as the app reads them (environment over [resnet_lab] in secrets.toml); the registry alone would
    # see only the environment.
    s = settings()
    registry = JobRegistry(warm=warm, jobs_per_device=s["jobs_per_device"], threads=s["job_threads"],
                           stop_grace_s=s["stop_grace_s"], cluster=s["ray_address"])
    if warm:
        registry.prewarm()
    return registry


def job_registry():
    """One registry per app process: jobs survive reruns, page switches, browser reloads and a cleared cache. Each
    job runs in its own worker process (resnet_lab.jobs); at most ``jobs_per_device`` at once per device, the rest
    wait FIFO."""
    return server_state("jobs", _new_registry)


def session_owner() -> str:
    """Who this session is, as stored with its jobs, runs and studies (resnet_lab.access):

    - signed in ([auth]): ``user:<e-mail or subject>``; Home.py shows only the sign-in page until then;
    - else a link: the key of the ``?sid=`` in the URL (so a reload, or a new tab on the same link, is the same
      session), or of this session's own new random sid, which is then written into the URL.

    The sid itself is the only secret: it is never stored, and what is stored cannot be turned back into it."""
    claims = signed_in_claims()
    if claims is not None:
        owner = access.owner_from_user(claims)
        if owner is None:  # a provider that gives neither e-mail nor subject: refuse rather than share an owner
            st.error("Your sign-in gave no e-mail address or subject; ask the teacher to check the provider.")
            st.stop()
        return owner
    if auth_configured():  # sign-in required, not signed in: no identity (Home.py stops before any page)
        st.stop()
    sid = st.query_params.get(SID_PARAM)
    if not (isinstance(sid, str) and access.SID_PATTERN.match(sid)):
        sid = st.session_state.get(OWNER_KEY) or uuid.uuid4().hex
    st.session_state[OWNER_KEY] = sid
    if st.query_params.get(SID_PARAM) != sid:
        st.query_params[SID_PARAM] = sid
    return access.owner_from_link(sid)


def display_name() -> str:
    """The name shown to the teacher next to runs: the signed-in user's name, else the optional name typed in the
    sidebar (kept in the URL too)."""
    claims = signed_in_claims()
    if claims is not None:
        # Never the e-mail address: the name is shown to every student next to the runs.
        return str(claims.get("name") or claims.get("preferred_username") or "")[:40]
    # The name is kept per owner in the app process (a page switch or a hand-over drops ?name= from the URL);
    # ?name= in a link still sets it, e.g. a bookmarked one.
    memo = owner_memo("profile")
    typed = st.query_params.get(NAME_PARAM)
    if isinstance(typed, str) and typed.strip():
        memo["name"] = typed.strip()[:40]
    return str(memo.get("name") or "")


def set_display_name(name: str) -> None:
    """Remember the typed name for this owner (and in the URL, so a copied link carries it)."""
    name = str(name or "").strip()[:40]
    owner_memo("profile")["name"] = name
    if name:
        st.query_params[NAME_PARAM] = name
    elif NAME_PARAM in st.query_params:
        del st.query_params[NAME_PARAM]


def is_teacher() -> bool:
    """Teacher mode: with sign-in, a user listed in ``teachers``; without, after this session typed the teacher
    password (only where one is configured)."""
    s = settings()
    claims = signed_in_claims()
    if claims is not None:
        return access.user_is_teacher(claims, s.get("teachers"))
    return bool(s.get("teacher_password")) and bool(st.session_state.get(TEACHER_KEY))


def password_throttle() -> access.PasswordThrottle:
    """One back-off for the whole server (every session, every tab, and a cleared cache): guessing gets slower, not
    cheaper, per tab."""
    return server_state("password", access.PasswordThrottle)


def check_teacher_password(typed: str) -> tuple[bool, float]:
    """(accepted, seconds before the next try may be made). Constant-time comparison, server-wide back-off."""
    expected = settings().get("teacher_password") or ""
    ok, wait = password_throttle().attempt(
        lambda: bool(expected) and hmac.compare_digest(str(typed).encode(), expected.encode()))
    st.session_state[TEACHER_KEY] = ok
    return ok, wait


def class_server() -> bool:
    """Several students share this app (any class-server setting, or sign-in): no page takes a path from a student
    or shows one of the server's."""
    shared = auth_configured() or is_class_server(settings())
    if shared:  # this process never runs a student's model file: only a job's worker does (models.files)
        model_files.forbid_here("on a class server a model file's code runs only in a job's worker process, "
                                "never in the app itself")
    return shared


def model_files_allowed() -> bool:
    """May students load their own model files here (``model_files`` setting; always on a single-user app)?"""
    return model_files_allowed_by(settings()) and not (auth_configured() and settings().get("model_files") is not True)


_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`]+/)+([^\s/'\"`]+)")


def public(text) -> str:
    """``text`` (an error message, a job's failure) as a student on a class server may see it: every absolute
    server path cut to its last part (``…/model.pt``). On a laptop, unchanged: there the user is the server."""
    text = str(text)
    return _ABS_PATH.sub(r"…/\1", text) if class_server() else text


def owner_shown(owner: str | None, name: str | None = None) -> str:
    return access.owner_shown(owner, session_owner(), name)


def redacted_config(config: dict) -> dict:
    """A run's config as this session may see it: no owner key of anyone (resnet_lab.access.redacted) and, on a
    class server, no server path (the data source, a checkpoint)."""
    out = access.redacted(config, session_owner())
    if not class_server():
        return out

    def clean(value):
        if isinstance(value, str):
            return public(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(out)


def may_delete(run) -> bool:
    """A student deletes their own runs; the teacher any; ownerless (CLI) runs only without a class server."""
    return run.may_delete(session_owner(), teacher=is_teacher(), ownerless_ok=not class_server())


def visible_runs(runs: list, key: str) -> list:
    """The runs this session sees: its own (and ownerless CLI runs) by default, everyone's after the switch."""
    owner = session_owner()
    ss = st.session_state
    if is_teacher() and not ss.get(f"_{key}_teacher"):
        ss[key] = ss[f"_{key}_teacher"] = True  # once, when teacher mode starts: everyone's
    ss.setdefault(key, False)
    everyone = st.toggle("Everyone's runs", key=key,
                         help="Off: only runs started from this session (and runs made with the CLI). "
                              "On: every run on this server, with who started it.")
    if everyone:
        return runs
    return [r for r in runs if r.owner in (None, owner)]


def owner_label(run) -> str:
    return owner_shown(run.owner, run.config.get("owner_name"))


def session_job(kind: str, key: str):
    """This session's job of ``kind``: the one whose id is in ``session_state[key]``, else (after a reload, or in
    a new tab on the same link) the owner's newest one, which is then remembered under ``key``."""
    registry, owner = job_registry(), session_owner()
    job = registry.get(st.session_state.get(key))
    if job is None or job.owner != owner:
        job = next(iter(registry.for_owner(owner, kind)), None)
        if job is not None:
            st.session_state[key] = job.id
    return job


def _owner_memos() -> tuple[dict, threading.Lock]:
    return server_state("memos", lambda: ({}, threading.Lock()))


def owner_memo(name: str) -> dict:
    """A dict kept per owner in the app process (not in session_state), so it survives a reload and is shared by
    the owner's tabs. Keep it small and plain (curves, a pick); it lasts as long as the server process."""
    memos, lock = _owner_memos()
    with lock:
        return memos.setdefault((session_owner(), name), {})


def new_events(job, key: str = "default") -> dict[str, list]:
    """The job's events grouped by type, read incrementally: each call fetches only what arrived since the last
    one (kept in session_state per job), so a 1 Hz poll of a long training is cheap."""
    cache = st.session_state.setdefault("_job_events", {})
    entry = cache.get((job.id, key))
    if entry is None:
        entry = cache[(job.id, key)] = {"n": 0, "by_type": {}}
        for old in [k for k in cache if k[0] != job.id and k[1] == key]:
            del cache[old]  # one job per key is all a page shows
    fresh = job.events(since=entry["n"])
    entry["n"] += len(fresh)
    for event in fresh:
        entry["by_type"].setdefault(event.get("type"), []).append(event)
    return entry["by_type"]


def thin(points: list, limit: int = 1500) -> list:
    """At most ~``limit`` evenly spaced points (always the last): a chart line needs no more."""
    if len(points) <= limit:
        return points
    step = -(-len(points) // limit)
    out = points[::step]
    return out if out[-1] is points[-1] else out + [points[-1]]


def shared_results():
    """The server's results of short page computations (resnet_lab.jobs.SharedResults), kept in the app process."""

    return server_state("computed", lambda: SharedResults(job_registry()))


def computed(kind: str, fn, title: str, key: str, identity=None, **kwargs):
    """The result of ``fn(job, **kwargs)`` (a module-level task, picklable arguments), computed once in a quick-lane
    worker for every session: nothing slow runs in this script thread. While it is being computed this draws its
    progress (or its place in line) and returns None; the page reruns by itself when the result is in. A failed
    or cancelled computation shows why, with a *Try again* button. ``key`` makes the panel's widget keys unique;
    ``identity`` joins the arguments in the result's key without being sent (e.g. a checkpoint's mtime)."""
    result, job = shared_results().get(kind, fn, owner=session_owner(), title=title, owner_name=display_name(),
                                       identity=identity, **kwargs)
    if job is None:
        return result

    def body(j) -> None:
        if queue_note(j, f"{key}_queue", cancel=j.owner == session_owner()):
            return
        if j.active:
            st.progress(min(max(j.progress, 0.0), 1.0), text=f"Computing {j.title} in the background · "
                                                              f"{j.message or 'starting'}")
            return
        if j.status == "failed":
            st.error(f"**Computing {j.title} failed:** {public(j.error)}", icon=":material/error:")
        else:
            st.warning(f"Computing {j.title} was {j.status}.", icon=":material/stop_circle:")
        st.button("Try again", key=f"{key}_retry", on_click=shared_results().retry, args=(j,),
                  icon=":material/refresh:")

    live_panel(job, body, 1.0)
    return None


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _minutes(seconds: float) -> str:
    return f"~{max(1, round(seconds / 60))} min" if seconds >= 60 else f"~{max(1, int(seconds))} s"


def queue_note(job, key: str, cancel: bool = True) -> bool:
    """While ``job`` waits for a free slot: its place in line, a wait estimate and a Cancel button (``cancel``; off
    for a shared computation another session started). True if shown."""
    if job is None or job.status != "pending":
        return False
    registry = job_registry()
    pos = registry.position(job)
    if pos is None:
        return False
    eta = registry.wait_estimate(job)
    where = {"cpu": "the CPU", "cuda": "the GPU"}.get(job.device, "a slot for quick computations")
    text = (f"**Waiting for {where}: {_ordinal(pos)} in line**" + (f", {_minutes(eta)}" if eta else "") +
            f". At most {registry.jobs_per_device} job(s) run at once per device so that each runs at full speed; "
            "yours starts by itself, you can leave this page.")
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.info(text, icon=":material/hourglass_top:")
    if cancel:
        c2.button("Cancel", key=f"{key}_cancel", on_click=job.stop, icon=":material/close:")
    return True


def start_stop(kind: str, start_label: str, key: str, on_start, blocked: bool = False, stop_help: str | None = None,
               icon: str = ":material/play_arrow:") -> None:
    """The Start and Stop buttons of a page that runs ``kind`` jobs: one running job per session and kind (Start
    is off while it runs or while ``blocked``); Stop ends this session's running job after its current step."""
    active = job_registry().active(session_owner(), kind)

    def stop() -> None:
        job = job_registry().active(session_owner(), kind)
        if job is not None:
            job.stop()

    b1, b2, _ = st.columns([1, 1, 4])
    b1.button(start_label, key=f"{key}_start", type="primary", icon=icon, on_click=on_start,
              disabled=active is not None or bool(blocked))
    b2.button("Stop", key=f"{key}_stop", icon=":material/stop:", on_click=stop,
              disabled=active is None or active.status == "stopping", help=stop_help)


def job_progress(job, what: str, key: str, stopped: str | None = None, with_title: bool = False) -> dict | None:
    """The top of every job panel: the queue note while it waits (then None), else a progress bar saying
    stopping / finished, the error if it failed, ``stopped`` if it was stopped. Returns the job's snapshot."""
    if queue_note(job, key):
        return None
    snap = job.snapshot()
    text = snap["message"] or "Starting …"
    if snap["status"] == "stopping":
        text = "Stopping after this batch … · " + text
    elif snap["status"] == "done":
        text = "Finished · " + text
    st.progress(min(max(snap["progress"], 0.0), 1.0), text=f"{job.title} · {text}" if with_title else text)
    if snap["status"] == "failed":
        st.error(f"**The {what} failed:** {public(job.error)}", icon=":material/error:")
    elif snap["status"] == "stopped" and stopped:
        st.warning(stopped, icon=":material/stop_circle:")
    return snap


def live_panel(job, body, poll_s: float) -> None:
    """Draw ``body(job)`` now, and again every ``poll_s`` seconds while the job runs — as a fragment, so only the
    panel reruns, not the page. When the job ends the page reruns once, so results and buttons catch up."""
    running_at_render = job.active

    @st.fragment(run_every=poll_s if running_at_render else None)
    def panel() -> None:
        j = job_registry().get(job.id) or job
        body(j)
        if running_at_render and not j.active:
            st.rerun()

    panel()


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """``resnet_lab.config.device_description()``, asked once per process (CUDA probing is not free)."""
    return device_description()


def cluster_gpus() -> int | None:
    """GPUs of the Ray cluster the jobs run on (``ray_address``); None without a cluster or before it has answered
    (never waits: the registry's probe asks it in a worker)."""
    if not settings().get("ray_address"):
        return None
    totals = job_registry().cluster_resources()
    return None if totals is None else int(totals.get("GPU", 0))


def has_cuda() -> bool:
    """Whether jobs get a GPU: this machine's, or the Ray cluster's (then pages offer full-size defaults too)."""
    return bool(device_info()["cuda"]) or bool(cluster_gpus())


def device_banner() -> None:
    """One honest line about the hardware: what runs fast here and what doesn't."""
    dev = device_info()
    gpus = cluster_gpus()
    if gpus:
        st.success(f"Jobs run on a Ray cluster with **{gpus} GPU{'s' if gpus > 1 else ''}**: full-size defaults. "
                   "Pages' own quick computations run on this machine.", icon=":material/hub:")
    elif gpus == 0:
        st.info("**Jobs run on a Ray cluster without GPUs** — on its CPUs, so defaults are smaller (subsets of the "
                "data, fewer epochs, narrower networks) and training takes minutes, not seconds.",
                icon=":material/hub:")
    elif dev["cuda"]:
        st.success(f"Running on the GPU **{dev['device']}** ({dev['gpu_memory_gib']} GiB): full-size defaults.",
                   icon=":material/memory:")
    else:
        st.info(
            f"**No GPU here — running on the CPU ({dev['cpu_cores']} cores).** Defaults are smaller (subsets of the "
            "data, fewer epochs, narrower networks) so things finish while you watch. Training, the LR range test and "
            "the experiments are slow (minutes, not seconds); looking at data, models, receptive fields and a trained "
            "network's activations is quick.",
            icon=":material/developer_board:",
        )


def page_intro(title: str, idea: str, try_: str, notice: str) -> None:
    """The page title, then the three-part lesson: what the page is about, what to do, what to look for."""
    st.title(title)
    with st.container(border=True):
        cols = st.columns(3, gap="large")
        for col, (head, icon, text) in zip(cols, [("The idea", ":material/lightbulb:", idea),
                                                  ("Try this", ":material/touch_app:", try_),
                                                  ("Notice", ":material/visibility:", notice)]):
            with col:
                st.markdown(f"{icon} **{head}**\n\n{text}")
