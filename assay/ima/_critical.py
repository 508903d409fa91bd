"""IMA critical data (``ima-buf`` entries): the SELinux state and policy hash.

SELinux measures itself through ``ima_measure_critical_data`` (``security/selinux/ima.c``):

* ``selinux-state``: the text ``initialized=N;enforcing=N;checkreqprot=N;`` followed by
  ``<policy capability>=N;`` for each capability the kernel knows, N being 0 or 1, no NUL.
* ``selinux-policy-hash``: measured with ``hash=true``, so the ``buf`` field holds the hash of the
  loaded policy image (in the ``ima_hash`` algorithm, the same as the d-ng algorithm) rather than
  the policy itself.

IMA logs a buffer only when its template digest is new, so an enforcing → permissive → enforcing
sequence leaves just two entries; only "was it ever permissive" can be told from the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import MalformedEvidence

SELINUX_STATE = b"selinux-state"
SELINUX_POLICY_HASH = b"selinux-policy-hash"
_PAIR = re.compile(rb"([a-z0-9_]{1,64})=([01]);")
_REQUIRED = ("initialized", "enforcing", "checkreqprot")
MAX_STATE = 4096


@dataclass(frozen=True, slots=True)
class SelinuxState:
    """A decoded ``selinux-state`` buffer. ``capabilities`` are the policy capabilities by name."""

    initialized: bool
    enforcing: bool
    checkreqprot: bool
    capabilities: Mapping[str, bool]


def parse_selinux_state(
    buf: bytes, *, where: str = "selinux-state", offset: int | None = None
) -> SelinuxState:
    """Decode the state text strictly: only ``name=0;``/``name=1;`` pairs, no name twice, and
    initialized, enforcing and checkreqprot present."""
    if len(buf) > MAX_STATE:
        raise MalformedEvidence(
            f"selinux-state of {len(buf)} bytes is over {MAX_STATE}", where=where, offset=offset
        )
    values: dict[str, bool] = {}
    pos = 0
    while pos < len(buf):
        m = _PAIR.match(buf, pos)
        if m is None:
            raise MalformedEvidence(
                f"selinux-state is not 'name=0|1;' pairs at byte {pos}", where=where, offset=offset
            )
        name = m.group(1).decode()
        if name in values:
            raise MalformedEvidence(f"selinux-state names {name} twice", where=where, offset=offset)
        values[name] = m.group(2) == b"1"
        pos = m.end()
    absent = [k for k in _REQUIRED if k not in values]
    if absent:
        raise MalformedEvidence(
            f"selinux-state lacks {', '.join(absent)}", where=where, offset=offset
        )
    caps = {k: v for k, v in values.items() if k not in _REQUIRED}
    return SelinuxState(
        values["initialized"], values["enforcing"], values["checkreqprot"], MappingProxyType(caps)
    )
