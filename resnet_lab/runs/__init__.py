"""The runs store: one folder per training run, written atomically, read safely.

``runs/<run-id>/`` (root overridable by ``RESNET_LAB_RUNS``) holds ``config.json``, ``status.json``,
``history.json`` (one row per epoch), ``metrics.json`` (final numbers), ``predictions.npz`` (test-set
probabilities, so no page re-evaluates) and ``model.pt`` (a state_dict only).

Every write goes to a temp file in the same folder and is renamed over the target, so a run killed
mid-write leaves the previous complete file, never a half one. Checkpoints are read with
``torch.load(weights_only=True)``: a foreign or tampered pickle raises ``RunError``, it never runs code.

Reference runs ship with the app in ``assets/reference/<run-id>/`` (``RESNET_LAB_REFERENCE`` overrides the folder;
``none`` turns them off): the same files plus ``about.json`` (title, command, data, hardware, date, top1, notes)
and ``checksums.json`` (sha256 of every other file). The store lists them after the user's own runs, read-only:
never deleted, and every file is checked against its checksum before it is used (``resnet_lab.runs.reference``).
"""

from __future__ import annotations

from resnet_lab.runs.files import (
    atomic_write,
    atomic_write_json,
    disk_full_message,
    DiskFullError,
    is_disk_full,
    list_saved_results,
    load_result_file,
    MIN_FREE_BYTES,
    output_file_problem,
    read_json,
    recording,
    RunError,
)
from resnet_lab.runs.reference import open_reference, reference_dir, verify_reference, write_checksums
from resnet_lab.runs.run import (
    FILES,
    load_state_dict,
    open_folder,
    read_run,
    Run,
    run_folder,
    RUN_ID,
    STATUSES,
)
from resnet_lab.runs.store import open_run_folder, RunStore

__all__ = [
    "atomic_write",
    "atomic_write_json",
    "disk_full_message",
    "DiskFullError",
    "FILES",
    "is_disk_full",
    "list_saved_results",
    "load_result_file",
    "load_state_dict",
    "MIN_FREE_BYTES",
    "open_folder",
    "open_reference",
    "open_run_folder",
    "output_file_problem",
    "read_json",
    "read_run",
    "recording",
    "reference_dir",
    "Run",
    "run_folder",
    "RUN_ID",
    "RunError",
    "RunStore",
    "STATUSES",
    "verify_reference",
    "write_checksums",
]
