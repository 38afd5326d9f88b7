"""Who owns what on a class server, and what a student may be shown: owner keys, redaction, the teacher password's
back-off. The app (``app/lab_ui.py``) decides *who* a session is (a signed-in user, or a link); this module holds
the rules that do not depend on Streamlit, so they are tested without it.

Two kinds of identity reach here:

- **Signed in** (``[auth]`` in secrets.toml, Streamlit's ``st.login``): the owner is ``user:<e-mail or subject>``,
  a stable claim of the provider's ID token. It is not a secret: knowing it gives nothing, the cookie is the proof.
- **A link** (no sign-in configured): the session's secret is the random ``sid`` in the URL. What is stored with
  runs, jobs and studies is a one-way key of it (``link:<16 hex>``), so the owner field of a run (on a page, in a
  downloaded config.json, in the runs folder) can no longer be pasted into ``?sid=`` to act as its owner.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from typing import Any

LOG = logging.getLogger("resnet_lab.access")

SID_PATTERN = re.compile(r"^[a-f0-9]{32,64}$")  # a uuid4 hex (122 random bits) or longer: not guessable, not a name one types
USER_PREFIX, LINK_PREFIX = "user:", "link:"


def owner_from_link(sid: str) -> str:
    """The owner key of a link session: a SHA-256 of its secret ``sid``, not reversible into a working link."""
    return LINK_PREFIX + hashlib.sha256(f"resnet_lab-link:{sid}".encode()).hexdigest()[:16]


def _trusted(claims: dict) -> dict:
    """The identifying claims to trust: the e-mail only when the provider does not say it is unverified (an
    account registered by hand could otherwise claim the teacher's address); the subject always."""
    out = {"sub": claims.get("sub")}
    if str(claims.get("email_verified")).strip().lower() != "false":
        out["email"] = claims.get("email")
    return out


def owner_from_user(claims: dict) -> str | None:
    """The owner key of a signed-in user: the (verified) e-mail when the provider gives one (teachers are listed by
    it), else the subject (``sub``); None when the token has neither."""
    trusted = _trusted(claims)
    for claim in ("email", "sub"):
        value = trusted.get(claim)
        if isinstance(value, str) and value.strip():
            return USER_PREFIX + value.strip().lower()
    return None


def user_is_teacher(claims: dict, teachers: list[str] | None) -> bool:
    """A signed-in user is a teacher when their (verified) e-mail or subject is in the ``teachers`` setting
    (case-insensitive)."""
    listed = {t.strip().lower() for t in teachers or () if t.strip()}
    trusted = _trusted(claims)
    return any(isinstance(trusted.get(c), str) and trusted[c].strip().lower() in listed for c in ("email", "sub"))


# Names a student could type to pass for someone else on another's screen.
RESERVED_NAMES = {"me", "another student", "cli / earlier", "teacher"}


def owner_shown(owner: str | None, viewer: str, name: str | None = None) -> str:
    """How an owner is shown to ``viewer``: "me", the owner's name, "another student" — never the key itself
    (for a signed-in user the key holds an e-mail address, which another student need not see either)."""
    if owner is None:
        return "CLI / earlier"
    if owner == viewer:
        return "me"
    name = (name or "").strip()
    if name.lower() in RESERVED_NAMES:
        return f"another student (named “{name}”)"
    return name or "another student"


def redacted(config: dict, viewer: str) -> dict:
    """``config`` as a student may see it: the owner field replaced by :func:`owner_shown`; nested dicts too."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "owner":
            out[key] = owner_shown(value, viewer, config.get("owner_name"))
        elif isinstance(value, dict):
            out[key] = redacted(value, viewer)
        else:
            out[key] = value
    return out


class PasswordThrottle:
    """A server-wide back-off for the teacher password: after ``free`` wrong tries in a row, every further try must
    wait ``base_s`` seconds, doubling with each wrong one (capped at ``max_s``); a try during the wait is refused
    unread, the right password included. Server-wide, not per session: a new tab or a reload starts no fresh count.
    Every wrong try is logged (time and count). The comparison itself stays constant-time (the caller's hmac).

    Hand-written: a dozen lines, and the web frameworks' rate limiters work per HTTP route, while a Streamlit
    password box is a websocket message to a script."""

    def __init__(self, free: int = 5, base_s: float = 1.0, max_s: float = 60.0, clock=time.monotonic) -> None:
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self.failures = 0
        self.locked_until = 0.0
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """Seconds until the next try is read (0: now)."""
        with self._lock:
            return max(0.0, self.locked_until - self.clock())

    def attempt(self, check) -> tuple[bool, float]:
        """Run ``check()`` (True when the password is right) unless a back-off is running. Returns (accepted,
        seconds to wait before the next try); a refused-unread try returns (False, remaining wait)."""
        with self._lock:
            now = self.clock()
            if now < self.locked_until:
                return False, self.locked_until - now
            if check():
                self.failures, self.locked_until = 0, 0.0
                return True, 0.0
            self.failures += 1
            wait = 0.0
            if self.failures >= self.free:
                wait = min(self.max_s, self.base_s * 2 ** (self.failures - self.free))
                self.locked_until = now + wait
            LOG.warning("wrong teacher password: %d wrong tries in a row at %s; next try in %.0f s",
                        self.failures, time.strftime("%Y-%m-%d %H:%M:%S"), wait)
            return False, wait
