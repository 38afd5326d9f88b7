"""Streamlit widgets generated from a config's field metadata (resnet_lab.settings): one widget per field, with
the label, help, step, choices and range the CLI's --help shows, so a page cannot drift from the library."""

from __future__ import annotations

import streamlit as st

from resnet_lab.settings import Spec


def to_widget(spec: Spec, value):
    """A field's value as its widget holds it: None (e.g. "all images") is 0 in a number input."""
    if spec.kind in ("int", "float"):
        if value is None:
            return 0 if spec.kind == "int" else 0.0
        return int(value) if spec.kind == "int" else float(value)  # 5 → 5.0 where the widget is a float one
    return value


def from_widget(spec: Spec, value):
    if spec.optional and spec.kind in ("int", "float") and value == 0:
        return None
    return value


def widget(spec: Spec, key: str, *, choices=None, disabled: bool = False, help_extra: str = "",
           empty_note: str | None = None, format_func=None) -> None:
    """The field's widget under ``key`` (its value lives in session_state[key]): a checkbox for a switch, a
    selectbox for choices, a number input (0 = the empty meaning for optional numbers), a text box otherwise."""
    help_ = spec.meta.help[:1].upper() + spec.meta.help[1:] + "." + help_extra
    options = choices if choices is not None else spec.meta.choices
    if spec.kind == "bool":
        st.checkbox(spec.title, key=key, disabled=disabled, help=help_)
    elif options:
        st.selectbox(spec.title, list(options), key=key, disabled=disabled, help=help_, format_func=format_func or str)
    elif spec.kind in ("int", "float"):
        label = spec.title + (f" (0 = {empty_note or spec.meta.empty})" if spec.optional else "")
        if spec.meta.lo is not None or spec.meta.hi is not None:
            help_ += f" Allowed: {spec.range_text()}."
        step = float(spec.meta.step or 1) if spec.kind == "float" else int(spec.meta.step or 1)
        st.number_input(label, key=key, disabled=disabled, help=help_, step=step,
                        format="%g" if spec.kind == "float" else "%d")
    else:
        st.text_input(spec.title, key=key, disabled=disabled, help=help_)


def field_error(errors: dict, name: str) -> None:
    if name in errors:
        st.error(errors[name], icon=":material/error:")
