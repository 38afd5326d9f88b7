"""Streamlit helpers shared by every page of the explorer.

Pages import this as ``import lab_ui`` (Streamlit puts ``app/`` on ``sys.path``). The library
(``resnet_lab``) never imports streamlit; everything UI-specific that more than one page needs lives here:

- ``data_source()``                  the data source chosen in the sidebar (or ``RESNET_LAB_DATA`` / ``cifar10``)
- ``load_data(source, subset, test_subset, seed)``  the Dataset, decoded once per process (progress bar the first time)
- ``data_or_stop(subset, test_subset)``  the Dataset, or the DataError and how to fix it, then stop the page
- ``data_or_none(subset, test_subset)``  the same, but returns None so the rest of the page still draws
- ``show_data_error(error)`` / ``md_escape(text)``  a DataError shown readably (paths and globs taken literally)
- ``job_registry()``                 the one JobRegistry shared by all sessions (training, LR test, experiments)
- ``session_owner()``                a stable id for this browser session, the owner of its jobs
- ``has_cuda()`` / ``device_info()`` / ``device_banner()``  what hardware this is, said honestly
- ``page_intro(title, idea, try_, notice)``  the title and the short lesson every page starts with
"""

from __future__ import annotations

import uuid

import streamlit as st

from resnet_lab.config import device_description, resolve_data_source

DATA_SOURCE_KEY = "data_source"  # the sidebar text input in Home.py
OWNER_KEY = "lab_session_owner"
SHARED_ARCHIVE_HINT = "../shared/data/cifar10-jpeg.tar.gz"


def data_source() -> str:
    """The data source every page uses: the sidebar setting, else ``RESNET_LAB_DATA``, else ``cifar10``."""
    return resolve_data_source(st.session_state.get(DATA_SOURCE_KEY))


@st.cache_resource(show_spinner=False, max_entries=8)
def load_data(source: str, subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for ``source``, shared by all sessions (one decoded copy in memory per source).

    Subsets are cut from the full set (class-balanced, seeded), so every page sees the same images for the same
    arguments. Raises ``resnet_lab.data.DataError``; errors are not cached, so a fixed path works on the next run.
    """
    if subset is not None or test_subset is not None:
        return load_data(source).subset(train=subset, test=test_subset, seed=seed)

    from resnet_lab.data import load_dataset

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
    """The DataError text (which names the path, the expected layout and both fixes) plus the fix in the app."""
    st.error(
        f"**The data could not be loaded.**\n\n{md_escape(str(error))}\n\n"
        f"**In the app:** type another source in the sidebar box *Data source* — a class-folder directory, "
        f"a `.tar.gz` such as `{SHARED_ARCHIVE_HINT}`, or `cifar10` (downloads once, needs internet). "
        f"To make it the default, start the app with `RESNET_LAB_DATA=<path> make app`.",
        icon=":material/folder_off:",
    )


def data_or_none(subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for the current source, or None after showing what went wrong and how to fix it."""
    from resnet_lab.data import DataError

    source = data_source()
    try:
        data = load_data(source, subset, test_subset, seed)
    except DataError as exc:
        show_data_error(exc)
        return None
    for note in data.notes:  # loaded, but worth knowing (class imbalance, skipped oversized images ...)
        st.warning(md_escape(note), icon=":material/warning:")
    return data


def data_or_stop(subset: int | None = None, test_subset: int | None = None, seed: int = 0):
    """The Dataset for the current source; if it cannot be loaded, explain why and stop this page (no traceback)."""
    data = data_or_none(subset, test_subset, seed)
    if data is None:
        st.stop()
    return data


@st.cache_resource(show_spinner=False)
def job_registry():
    """One registry per app process: jobs survive reruns, page switches and browser reloads."""
    from resnet_lab.jobs import JobRegistry

    return JobRegistry()


def session_owner() -> str:
    """A stable id for this browser session (kept in session_state); jobs are listed per owner."""
    if OWNER_KEY not in st.session_state:
        st.session_state[OWNER_KEY] = uuid.uuid4().hex[:12]
    return st.session_state[OWNER_KEY]


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """``resnet_lab.config.device_description()``, asked once per process (CUDA probing is not free)."""
    return device_description()


def has_cuda() -> bool:
    return bool(device_info()["cuda"])


def device_banner() -> None:
    """One honest line about the hardware: what runs fast here and what doesn't."""
    dev = device_info()
    if dev["cuda"]:
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
