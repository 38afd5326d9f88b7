"""Progress events: plain dicts handed to a ``callback(event)``.

The trainer, the LR finder and the experiments report through these; the CLI progress bar, the app's live
curves and the tests all read the same stream. Keys per type are documented in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any, Callable

Callback = Callable[[dict], None]


def emit(callback: Callback | None, type_: str, **fields: Any) -> None:
    if callback is not None:
        callback({"type": type_, **fields})


class Collector:
    """A callback that keeps every event; handy in notebooks and tests."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def of(self, type_: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == type_]
