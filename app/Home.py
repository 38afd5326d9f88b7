"""resnet_lab explorer: entry point. `streamlit run app/Home.py` (or `make app`).

This script runs on every page view: it sets up navigation over the pages in ../pages/, draws the shared sidebar
(data source, device) and then runs the chosen page. The Home page itself is the function `home` below.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="resnet_lab", layout="wide", page_icon=":material/hub:")

import lab_ui  # noqa: E402  (app/ is on sys.path under streamlit run and AppTest)

from resnet_lab.data import dataset_status  # noqa: E402
from resnet_lab.runs import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (path from the repo root, title, icon). Pages are written by different people; a file that does not exist yet is
# left out of the navigation. tests/test_app.py reads this list (with ast) to find the pages to test.
PAGES = [
    ("pages/data_models.py", "Data & Models", ":material/photo_library:"),
    ("pages/lr_finder.py", "LR Finder", ":material/search_insights:"),
    ("pages/receptive_field.py", "Receptive Field", ":material/center_focus_strong:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/activations.py", "Activations", ":material/layers:"),
    ("pages/gradcam.py", "Grad-CAM", ":material/local_fire_department:"),
    ("pages/misclassified.py", "Misclassified", ":material/report:"),
    ("pages/degradation.py", "Depth Degradation", ":material/stacked_line_chart:"),
    ("pages/search.py", "Hyperparameter Search", ":material/tune:"),
]

SECTIONS = {
    "Start": ["pages/data_models.py"],
    "Before training": ["pages/lr_finder.py", "pages/receptive_field.py"],
    "Train": ["pages/train.py"],
    "Look inside": ["pages/activations.py", "pages/gradcam.py", "pages/misclassified.py"],
    "Experiments": ["pages/degradation.py", "pages/search.py"],
}

# One line per page for the Home page's map of the explorer.
BLURBS = {
    "pages/data_models.py": "CIFAR-10's ten classes, what augmentation does to them, and each network layer by layer.",
    "pages/lr_finder.py": "Sweep the learning rate upwards for a few hundred steps and read a good maximum off the curve.",
    "pages/receptive_field.py": "How much of the 32×32 image each layer can see, computed and measured with gradients.",
    "pages/train.py": "Train a ResNet with the one-cycle policy and watch loss, accuracy, LR and momentum live.",
    "pages/activations.py": "Feature maps of a trained network for any test image, layer by layer.",
    "pages/gradcam.py": "Which pixels a prediction depends on: Grad-CAM, Guided Grad-CAM, saliency, integrated "
                        "gradients and occlusion side by side, with a sanity check of each.",
    "pages/misclassified.py": "The test images the network gets wrong, the confusion matrix and what it confuses.",
    "pages/degradation.py": "Train plain and residual networks of growing depth: deeper plain nets train *worse*.",
    "pages/search.py": "Let Optuna tune learning rate, weight decay and more, and see which settings matter.",
}


def _page(path: str, title: str, icon: str) -> st.Page:
    # st.Page resolves paths against app/, where this script lives.
    return st.Page(f"../{path}", title=title, icon=icon)


def available_pages() -> dict[str, st.Page]:
    return {path: _page(path, title, icon) for path, title, icon in PAGES if (ROOT / path).exists()}


@st.cache_resource(show_spinner=False)
def _status_checks() -> tuple:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="data-status"), {}, threading.Lock()


def _status(source: str) -> dict | None:
    """The data source's status, or None while it is still being checked. The check runs in a background thread:
    for an archive that was never decoded it reads the whole listing (seconds, minutes on a busy machine), and the
    Home page must not wait for that. Re-checked after 30 s (cheap once a page has decoded the data)."""
    pool, checks, lock = _status_checks()
    with lock:
        started, future = checks.get(source, (0.0, None))
        if future is None or (future.done() and time.monotonic() - started > 30):
            future = pool.submit(dataset_status, source)
            checks[source] = (time.monotonic(), future)
    try:
        return future.result(timeout=3.0)  # a cached source answers in milliseconds: no flicker
    except FuturesTimeout:
        return None


@st.fragment(run_every=1.0)
def _wait_for_status(source: str) -> None:
    """Shown while the data check runs: polls it and redraws the whole page once it is known."""
    st.caption(":material/hourglass_top: Checking the data source … (the first time, the archive's listing is "
               "read; the pages that need no data already work)")
    if _status(source) is not None:
        st.rerun()


def _name_changed() -> None:
    lab_ui.set_display_name(st.session_state.get("lab_display_name"))


def _teacher_login() -> None:
    ok, wait = lab_ui.check_teacher_password(st.session_state.get("lab_teacher_password", ""))
    if not ok:
        st.session_state["_teacher_error"] = (
            f"Too many wrong passwords on this server: the next try is read in {math.ceil(wait)} s." if wait > 0 else
            "That is not the teacher password.")
    st.session_state["lab_teacher_password"] = ""


def _teacher_stop(job_id: str) -> None:
    job = lab_ui.job_registry().get(job_id)
    if job is not None and lab_ui.is_teacher():
        job.stop()


@st.fragment(run_every=3.0)
def class_jobs() -> None:
    """The teacher's view of every student's running and waiting jobs, each with Stop (a queued one is cancelled)."""
    jobs = [j for j in lab_ui.job_registry().all() if j.active]
    running = sum(j.status != "pending" for j in jobs)
    with st.expander(f"Class jobs: {running} running, {len(jobs) - running} waiting", expanded=bool(jobs)):
        if not jobs:
            st.caption("No job is running or waiting.")
        for job in jobs:
            who = lab_ui.owner_shown(job.owner, job.owner_name)
            # One under the other: the sidebar is too narrow for text and a button side by side ("S..").
            st.markdown(f"**{lab_ui.md_escape(job.title)}** · {lab_ui.md_escape(who)}  \n"
                        f"{job.status}, {100 * job.progress:.0f}%")
            st.button("Stop", key=f"teacher_stop_{job.id}", on_click=_teacher_stop, args=(job.id,),
                      disabled=job.status == "stopping", icon=":material/stop:",
                      help="Ends this student's job (after its current batch; a waiting job is cancelled).")


def identity() -> None:
    """Who this tab is: the signed-in user (with [auth]), else the link's session id (a reload keeps it) and an
    optional name; teacher mode (the ``teachers`` list when signed in, else the teacher password)."""
    lab_ui.session_owner()
    with st.sidebar:
        if lab_ui.auth_configured():
            st.caption(f":material/account_circle: Signed in as **{lab_ui.md_escape(lab_ui.display_name())}**")
            st.button("Sign out", key="lab_logout", on_click=st.logout, icon=":material/logout:")
            if lab_ui.is_teacher():
                st.caption(":material/school: Teacher mode: you see and manage every run and job.")
                class_jobs()
            return
        if not st.session_state.get("lab_display_name"):
            st.session_state["lab_display_name"] = lab_ui.display_name()
        st.text_input("Your name (optional)", key="lab_display_name", on_change=_name_changed, max_chars=40,
                      help="Shown next to your runs in everyone's list. Without sign-in your jobs, runs and LR "
                           "curves belong to this tab's link (the `sid` in the address bar): reload it or open it "
                           "in a new tab and they are still yours. Anyone with the link is you: don't share it.")
        if lab_ui.settings().get("teacher_password"):
            if lab_ui.is_teacher():
                st.caption(":material/school: Teacher mode: you see and manage every run and job.")
                class_jobs()
            else:
                with st.expander("Teacher"):
                    st.text_input("Teacher password", type="password", key="lab_teacher_password",
                                  on_change=_teacher_login)
                    if st.session_state.get("_teacher_error"):
                        st.error(st.session_state.pop("_teacher_error"))


def stop_page(problems: dict[str, str]) -> None:
    """Fail closed: a malformed class-server setting (or a half-done sign-in set-up) stops the whole app with what
    to fix, instead of serving pages without the locks, caps and roles that were asked for."""
    st.title("resnet_lab is not running: a class-server setting needs fixing")
    st.error("The app stopped rather than run without the data lock, caps and teacher role it was given. "
             "Whoever runs this server: fix the setting(s) below and restart `make app`.", icon=":material/lock:")
    for name, message in problems.items():
        st.markdown(f"- **`{name}`** — {lab_ui.md_escape(message)}")  # names are the settings' own keys
    st.caption("Settings are read from the environment (RESNET_LAB_<NAME>) and from the [resnet_lab] and [auth] "
               "tables of .streamlit/secrets.toml; docs/class-server.md → Class-server settings lists them all.")
    st.stop()


def sign_in_page() -> None:
    """With [auth] configured, a visitor who is not signed in sees only this."""
    st.title("resnet_lab — residual networks on CIFAR-10")
    st.markdown("This class server asks you to **sign in** first, with your school account. Your runs, jobs and "
                "LR-test curves are then yours in every tab and after a reload; the teacher sees everyone's.")
    providers = lab_ui.auth_providers()
    for name in providers:
        label = "Sign in" if name is None else f"Sign in with {name}"
        st.button(label, key=f"lab_login_{name or 'default'}", type="primary", icon=":material/login:",
                  on_click=st.login, args=() if name is None else (name,))
    st.stop()


def sidebar() -> dict:
    """The data-source setting (applies to every page) and its status."""
    identity()
    locked = lab_ui.data_locked()
    if lab_ui.DATA_SOURCE_KEY not in st.session_state:
        st.session_state[lab_ui.DATA_SOURCE_KEY] = lab_ui.data_source()
    with st.sidebar:
        if locked:  # a class server: the data is fixed, and no page takes a path from a student
            st.caption(":material/lock: The data source is set by the class server.")
        else:
            st.text_input(
                "Data source",
                key=lab_ui.DATA_SOURCE_KEY,
                help="`cifar10` (torchvision download, needs internet once), a class-folder directory "
                     "(`train/<class>/*.png`, `test/<class>/*.png`) or a `.tar.gz` of one, e.g. "
                     f"`{lab_ui.SHARED_ARCHIVE_HINT}`. Applies to every page.",
            )
        status = _status(lab_ui.data_source())
        if status is None:
            _wait_for_status(lab_ui.data_source())
            status = {"ok": None, "checking": True}
        elif status.get("ok"):
            st.caption(f":material/check_circle: {status['train_size']:,} train · {status['test_size']:,} test · "
                       f"{len(status['classes'])} classes")
        elif not status.get("checking"):
            # The first line says what is wrong; the Home page shows the whole message with the fixes.
            first = (status.get("error") or "The data source could not be read.").splitlines()[0]
            st.error(lab_ui.md_escape(lab_ui.public(first)), icon=":material/folder_off:")
        if status.get("note"):
            st.caption(lab_ui.md_escape(lab_ui.public(status["note"])))
        dev = lab_ui.device_info()
        if lab_ui.settings().get("ray_address"):  # training, LR tests and experiments run on a Ray cluster
            registry = lab_ui.job_registry()
            totals = registry.cluster_resources()  # never waits here: the first call starts a quick probe
            problem = registry.cluster_problem()
            if problem:
                st.error("The Ray cluster cannot be reached; jobs will fail until it can: "
                         + lab_ui.md_escape(lab_ui.public(problem.splitlines()[0][:240])), icon=":material/hub:")
            else:
                st.caption(":material/hub: Jobs run on a Ray cluster · " + (
                    f"{int(totals.get('CPU', 0))} CPUs · {int(totals.get('GPU', 0))} GPUs" if totals is not None
                    else "asking it for its size…"))
        else:
            st.caption(f":material/memory: GPU: {dev['device']}" if dev["cuda"]
                       else f":material/developer_board: CPU only · {dev['cpu_cores']} cores")
    return status


def reference_box() -> None:
    """The reference networks shipped with the explorer: what the Look-inside pages open before you train."""

    refs = RunStore().references()
    if not refs:
        return
    with st.container(border=True):
        st.markdown("**Reference networks** (shipped, read-only)")
        for run in refs:
            top1 = run.metrics.get("top1")
            n = run.metrics.get("n_test") or run.config.get("n_test")
            acc = f"{top1:.1%} top-1" if isinstance(top1, (int, float)) else "accuracy unknown"
            st.markdown(f"`{run.id}` · `{run.config.get('model', '?')}` · {acc}"
                        + (f" on {n:,} test images" if isinstance(n, int) else ""))
            about = run.about or {}
            if about.get("command"):
                st.caption(f"`{about['command']}` · " + lab_ui.md_escape(" · ".join(
                    str(about[k]) for k in ("data", "hardware", "date") if about.get(k))))


def home() -> None:
    st.title("resnet_lab — residual networks on CIFAR-10")
    st.markdown(
        "An explorer for the ideas that make small image classifiers train fast and well. Everything here runs a "
        "real network on real data: change a setting and watch what happens."
    )

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("What you will see")
        st.markdown(
            """
**Residual connections.** A residual block computes `x + F(x)` instead of `F(x)`. The layers only have to learn a
*correction* to their input, and the gradient has a direct path back through the `+`. That is why a 50-layer
ResNet trains while a 50-layer plain stack of the same layers trains *worse than a shallow one* — not because
it overfits, but because the optimiser cannot find good weights. This is the **depth degradation** problem.

**The one-cycle policy.** Instead of a fixed learning rate, warm the rate up to a large maximum and anneal it to
almost zero, while momentum moves the opposite way. Large rates in the middle act as a regulariser and make
training several times shorter. The **LR range test** finds that maximum in a minute.

**Receptive fields.** A 3×3 convolution sees 3×3 pixels; stack them, add strides, and deeper units see more and
more of the image. A network can only recognise what fits in what its last layers see — the receptive field
tells you whether a design can see a whole 32×32 object.

**Looking inside.** Feature maps, Grad-CAM and the list of mistakes show *what* a trained network relies on —
and where it is confidently wrong.
"""
        )
        st.subheader("An afternoon with the explorer")
        st.markdown(
            """
1. **Data & Models** — look at the ten classes and at augmentation; compare `resnet20` with its shortcut-free twin `plain20`.
2. **LR Finder** — run a range test and pick a maximum learning rate.
3. **Train** — train with one-cycle at that rate; watch the LR and momentum curves next to the loss.
4. **Receptive Field** — see how far each layer of what you trained can see.
5. **Activations**, **Grad-CAM**, **Misclassified** — open up the network you trained (until you have one, they
   open the reference network that ships with the explorer).
6. **Depth Degradation** — start the plain-vs-residual experiment, and discuss while it runs.
7. **Hyperparameter Search** — if time is left: let a search confirm (or beat) your hand-picked settings.
"""
        )
    with right:
        st.subheader("This session")
        status = STATUS
        with st.container(border=True):
            st.markdown("**Dataset**")
            if status.get("checking"):
                st.info("Checking the data source in the background …", icon=":material/hourglass_top:")
            elif status.get("ok"):
                # A class server's data path is the server's business: students see that it is fixed, not where.
                st.markdown("Source: set by the class server" if lab_ui.class_server()
                            else f"Source: `{status['source']}`")
                # plain text, not st.metric: three metrics in this narrow column cut "50,000" to "50,…"
                st.markdown(f"**{status['train_size']:,}** training images · **{status['test_size']:,}** test "
                            f"images · **{len(status['classes'])}** classes")
                st.caption(", ".join(status["classes"]))
                if status.get("note"):
                    st.caption(lab_ui.md_escape(lab_ui.public(status["note"])))
                if str(status["source"]).endswith("cifar10-jpeg.tar.gz"):
                    st.caption("This is the JPEG re-encode of CIFAR-10: accuracies read about 3.4 points lower "
                               "than on the original images.")
            else:
                lab_ui.show_data_error(status.get("error") or "The data source could not be read.")
                st.caption("The pages that need no data (the model tables, for example) keep working.")
        with st.container(border=True):
            st.markdown("**Device**")
            lab_ui.device_banner()
        reference_box()
        st.subheader("Pages")
        for section, paths in SECTIONS.items():
            present = [p for p in paths if p in PAGE_OBJECTS]
            if not present:
                continue
            st.markdown(f"**{section}**")
            for path in present:
                st.page_link(PAGE_OBJECTS[path])
                st.caption(BLURBS[path])


lab_ui.preload_page_imports()  # before any page runs, once per process (a race between sessions' imports)

# Before any page: settings that fail closed, then sign-in where it is configured.
_PROBLEMS = lab_ui.settings_problems()
if _PROBLEMS:
    stop_page(_PROBLEMS)
if lab_ui.auth_configured() and lab_ui.signed_in_claims() is None:
    sign_in_page()
lab_ui.class_server()  # on a class server this process never runs a student's model file from here on

# Module globals, read by `home` (which runs inside .run() below, in this same script run).
PAGE_OBJECTS = available_pages()
nav = {"Start": [st.Page(home, title="Home", icon=":material/home:", default=True)]}
for section, paths in SECTIONS.items():
    nav.setdefault(section, []).extend(PAGE_OBJECTS[p] for p in paths if p in PAGE_OBJECTS)
# The page is resolved from the link before the sidebar writes a new session's id into the query string (?sid=...),
# so the page a link names never depends on that write (a page's link must open that page, never Home;
# tests/test_browser.py opens every page that way).
PAGE = st.navigation({k: v for k, v in nav.items() if v})
STATUS = sidebar()
PAGE.run()
