"""Runtime policies as CoRIM, beside golden sets (``golden.corim``: the same envelope).

What maps: every approved file version and every approved ``ima-buf`` digest is a reference value,
a measurement map whose ``mkey`` is ``"file:<path>"`` or ``"buffer:<name>"`` (the name as IMA logs
it) and whose ``digests`` (2) are the ``[alg, value]`` pairs of that one version (IANA Named
Information ids, ``"sha-1"`` as text). Each version is its own reference triple on the
environment ``{vendor: "assay", model: <policy name>}``: CoRIM corroborates a triple when all its
values match, so approved alternatives (two versions of a binary during a rollout) must be
separate triples, never two digests of one measurement map (which would both have to match).

What does not map — status, validity (also in the CoRIM's validity), exclusions, signature keys,
trusted keyrings and their CAs, SELinux, boot_aggregate — travels in the private extension key
-70001, as the runtime YAML document without its files and buffers. The profile is
``tag:assay.invalid,2026:runtime/v1``; import refuses a golden set's CoRIM by its profile, and goes
back through the YAML loader, so a CoRIM is validated exactly like a YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from .corim import (
    RUNTIME_PROFILE,
    _digest_fields,
    _digests,
    _environment,
    _expect,
    _fail,
    envelope,
    read_envelope,
)
from .runtime import RuntimePolicy
from .runtime_yaml import load_runtime_yaml, runtime_to_plain

_KINDS = (("file:", "files"), ("buffer:", "buffers"))


def export_runtime_corim(p: RuntimePolicy) -> bytes:
    """The policy as an unsigned CoRIM (CBOR bytes). GoldenFormatError for a name that is not
    UTF-8 (CoRIM text is UTF-8; such a name stays in YAML)."""
    plain = runtime_to_plain(p)
    triples = [
        [_environment(p.name), [{0: prefix + name, 1: {2: _digests(d)}}]]
        for prefix, key in _KINDS
        for name, versions in plain.pop(key).items()
        for d in versions
    ]
    return envelope(p.ref, RUNTIME_PROFILE, plain, triples)


def _start(plain: dict[str, Any]) -> None:
    plain["files"], plain["buffers"] = {}, {}


def _apply(plain: dict[str, Any], mm: Any, source: str, i: int) -> None:
    where = f"measurement {i}"
    mm = _expect(mm, Mapping, where, source)
    key, mval = mm.get(0), _expect(mm.get(1), Mapping, f"{where} mval", source)
    for prefix, table in _KINDS:
        if isinstance(key, str) and key.startswith(prefix) and len(key) > len(prefix):
            digests = _digest_fields(mval, source, where)
            plain[table].setdefault(key[len(prefix) :], []).append(digests)
            return
    raise _fail(source, f"{where}: unknown measurement key {key!r} (file:… or buffer:…)")


def import_runtime_corim(data: bytes, source: str = "<corim>") -> RuntimePolicy:
    """Read a CoRIM written by :func:`export_runtime_corim`; anything malformed, or a golden
    set's CoRIM, is a GoldenFormatError."""
    plain = read_envelope(data, source, RUNTIME_PROFILE, _start, _apply)
    text = yaml.dump(plain, Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=True)
    return load_runtime_yaml(text, source)
