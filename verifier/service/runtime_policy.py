"""A node's runtime policies: parsed from the store (the store's status overriding the
document's), compiled once per set of versions and statuses (``compiled_runtime``), and the key
that says which policies a stored IMA prefix was judged by (``runtime_key``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from golden.runtime import RUNTIME_STATUSES, RuntimePolicy, RuntimeStatus
from verifier.appraisal.runtime import CompiledRuntime, compile_runtime

from .context import Services
from .golden_policy import GoldenRowLike, compiled_cached, decode_document, rows_key

RUNTIME_FORMATS = ("yaml",)


def parse_runtime(data: bytes, source: str = "<upload>") -> RuntimePolicy:
    """A runtime policy from an uploaded YAML document (MalformedEvidence if unusable)."""
    from golden.runtime_yaml import load_runtime_yaml

    return decode_document("runtime policy (yaml)", lambda: load_runtime_yaml(data, source))


def runtime_from_row(row: GoldenRowLike) -> RuntimePolicy:
    """The stored version with the store's status and reason."""
    p = parse_runtime(row.source, f"{row.name}@{row.version}")
    status: RuntimeStatus = row.status if row.status in RUNTIME_STATUSES else "draft"
    return p.with_status(status, row.reason or ("revoked" if status == "revoked" else None))


@dataclass(frozen=True, slots=True)
class NodeRuntime:
    """The runtime policies that apply to one node now: compiled, and their key."""

    compiled: CompiledRuntime
    key: str
    """SHA-256 (hex) of the versions with their store status and the refs in force: a stored IMA
    prefix judged under another key is not continued (its entries must be judged again)."""

    @property
    def refs(self) -> tuple[str, ...]:
        return self.compiled.refs


def compiled_runtime(svc: Services, rows: Sequence[GoldenRowLike]) -> NodeRuntime:
    """Compile ``rows`` once per combination of versions and statuses (``policy_for``'s rule);
    no rows (no policy applies: most nodes) compiles nothing worth caching."""
    if not rows:
        return _NO_RUNTIME
    key = ("runtime", rows_key(rows))
    compiled = compiled_cached(
        svc, key, lambda: [runtime_from_row(r) for r in rows], compile_runtime
    )
    return NodeRuntime(compiled, runtime_key(rows, compiled))


def runtime_key(rows: Sequence[GoldenRowLike], compiled: CompiledRuntime) -> str:
    text = repr((rows_key(rows), compiled.refs))
    return hashlib.sha256(text.encode()).hexdigest()


_EMPTY = compile_runtime((), dt.datetime.fromtimestamp(0, dt.UTC))
_NO_RUNTIME = NodeRuntime(_EMPTY, runtime_key((), _EMPTY))
"""What applies to a node no runtime policy selects (most nodes): the same at every moment."""
