"""Reading the console's forms: the one place a form field becomes a typed value (every failure
a BadRequest with a code, shown as a 400 page). Templates write forms with the one macro
``form()`` in ``templates/_macros.html``, which adds the CSRF token; ``_session.signed_in``
checks it on every POST."""

from __future__ import annotations

from flask import request

from verifier.service._http import printable, reason_field
from verifier.service.errors import BadRequest

MAX_NOTE = 4000


def reason() -> str:
    """The mandatory reason of every action (1..1000 printable characters)."""
    return reason_field({"reason": request.form.get("reason")})


def text(name: str, *, max_len: int = 200, required: bool = False) -> str:
    value = (request.form.get(name) or "").strip()
    if required and not value:
        raise BadRequest("bad_field", f"{name} is required")
    if len(value) > max_len:
        raise BadRequest("bad_field", f"{name} is longer than {max_len} characters")
    return printable(value, name)


def note() -> str:
    """A note: several lines of printable text."""
    value = (request.form.get("text") or "").replace("\r\n", "\n").strip()
    if not value or len(value) > MAX_NOTE:
        raise BadRequest("bad_field", f"a note is 1..{MAX_NOTE} characters")
    for line in value.split("\n"):
        printable(line, "note")
    return value


def events() -> list[int]:
    """The event indices ticked in a promotion form."""
    out = []
    for v in request.form.getlist("event"):
        if not v.isdigit() or len(v) > 6:
            raise BadRequest("bad_field", "event indices are small integers")
        out.append(int(v))
    if not out:
        raise BadRequest("bad_field", "select at least one event to promote")
    return out
