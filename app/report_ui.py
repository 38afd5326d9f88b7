"""A finished run against the assignment: the requirement list and the hand-in report (zip), both made in a worker
(``tasks.report``: the run's network is rebuilt and run there, never in this process). Train and Misclassified use
it."""

from __future__ import annotations

import streamlit as st

import lab_ui
from resnet_lab import tasks

MARK = {"pass": "✔", "fail": "✘", "unknown": "?", "info": "·"}


def panel(run, key: str) -> None:
    """A button that starts the check and the report; then the list and a download button."""
    asked = f"_{key}_report_for"
    if st.session_state.get(asked) != run.id:
        st.button("Check against the assignment and make the report", key=f"{key}_report_go",
                  icon=":material/assignment_turned_in:", on_click=lambda: st.session_state.update({asked: run.id}),
                  help="The assignment's requirements (architecture, training settings, the 90% target) with what "
                       "this run measured, and a README with figures to hand in (a zip). Made in the background.")
        return
    stamp = run.checkpoint_path.stat().st_mtime if run.has_checkpoint else 0.0
    result = lab_ui.computed("report", tasks.report, f"the report of run {run.id}", f"{key}_report",
                             identity=stamp, run_path=str(run.path), reference=bool(run.reference))
    if result is None:
        return
    items = result["check"]
    passed = sum(i["status"] == "pass" for i in items)
    failed = sum(i["status"] == "fail" for i in items)
    st.markdown(f"**The assignment, checked:** {passed} met, {failed} not, "
                f"{sum(i['status'] == 'unknown' for i in items)} unknown.")
    st.markdown("\n".join(f"- {MARK[i['status']]} {lab_ui.md_escape(i['requirement'])}: "
                          f"{lab_ui.md_escape(i['measured'])}" + (f" — {lab_ui.md_escape(i['note'])}" if i['note']
                                                                    else "") for i in items))
    st.download_button("Download the report (README.md + figures, zip)", data=result["zip"],
                       file_name=result["name"], mime="application/zip", key=f"{key}_report_zip",
                       icon=":material/download:", on_click="ignore")
