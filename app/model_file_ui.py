"""A student's own network on the pages: what its check found (shown on Data & Models) and the session's list of
checked files, which the Train and LR Finder pages offer beside the lab's networks."""

from __future__ import annotations

import streamlit as st

import lab_ui
from resnet_lab.models import is_model_file, param_count
from resnet_lab.models.files import display_name

MINE = "my_models"  # session_state: spec -> {"label", "params"} of the files this session checked and kept
MARK = {"pass": "✔", "fail": "✘", "unknown": "?", "info": "·"}


def label(spec: str) -> str:
    """``upload:<sha>/my_net.py:Net`` -> ``my_net.py:Net (yours)``: no server path or hash on a page."""
    return f"{display_name(spec)} (yours)"


def mine() -> dict[str, dict]:
    """The checked model files of this session, spec -> {"label", "params"}."""
    return st.session_state.setdefault(MINE, {})


def params(name: str) -> int | None:
    """A model's parameter count for the class server's cap: the registry's, or what the worker's check counted
    for a file (a file's code never runs here to count it again); None for a file this session did not check."""
    if is_model_file(name):
        return (mine().get(name) or {}).get("params")
    return param_count(name)


def choices(names: list[str]) -> list[str]:
    """A model picker's options: the lab's networks, then this session's own (where model files are allowed)."""
    return list(names) + (list(mine()) if lab_ui.model_files_allowed() else [])


def shown(name: str) -> str:
    """How a picker shows an option."""
    return (mine().get(name) or {}).get("label") or (label(name) if name.startswith("upload:") else display_name(name))


def show(spec: str, result: dict) -> None:
    """The check of an uploaded file: what is wrong with it, or its size, outputs, receptive field and the
    assignment's architecture, and a button to use it on the other pages."""
    if result.get("problem"):
        st.error(f"**Your network cannot be used yet.** {lab_ui.public(result['problem'])}", icon=":material/error:")
        mine().pop(spec, None)
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters", f"{result['params'] / 1e6:.2f} M", help=f"{result['params']:,} weights and biases")
    rf = result.get("rf") or {}
    if "rf_max" in rf:
        c2.metric("Receptive field", f"{rf['rf_max']:g} px", help=f"of the last spatial layer, {rf['layer']}, over "
                  f"its longest path ({rf['rf_min']:g} px over its shortest) in a 32-px image")
    c3.metric("Returns", {"logits": "scores", "log_probs": "log-probabilities", "probs": "probabilities"}.get(
        result["output_kind"], result["output_kind"]))
    if result.get("note"):
        (st.warning if result["output_kind"] == "probs" else st.info)(result["note"], icon=":material/school:")
    if "problem" in rf:
        st.caption(f"Receptive fields: {lab_ui.public(rf['problem'])} Everything else still works.")
    passed = sum(i["status"] == "pass" for i in result["check"])
    failed = sum(i["status"] == "fail" for i in result["check"])
    st.markdown(f"**The assignment's architecture:** {passed} requirements met, {failed} not.")
    st.markdown("\n".join(f"- {MARK[i['status']]} {lab_ui.md_escape(i['requirement'])}: "
                          f"{lab_ui.md_escape(i['measured'])}" for i in result["check"]))
    if spec in mine():
        st.success(f"**{label(spec)}** is in the model lists of the Train and LR Finder pages.",
                   icon=":material/check_circle:")
    elif st.button("Use it on the other pages", key="my_model_use", icon=":material/add_circle:"):
        mine()[spec] = {"label": label(spec), "params": int(result["params"])}
        st.rerun()
