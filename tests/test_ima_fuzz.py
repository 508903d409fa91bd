"""Property tests for the IMA parser and replay: whatever the bytes, a log or MalformedEvidence;
what parses is covered by its template hashes; made entries round-trip; replay is incremental."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.errors import MalformedEvidence
from assay.ima import parse_ima_log, replay_from, replay_ima

from . import imalogbuilder as b
from .test_ima_parse import _vector

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [
    b.binary(b.typical(3)),
    b.binary(b.typical(2, template="ima-sig")),
    b.binary(b.typical(2, template="ima")),
    b.binary(b.typical(2), hash_alg="sha256"),
    b.ascii_lines(b.typical(3)),
    _vector("keylime-openpower-ima-sig.ascii"),
]


def _check(data: bytes) -> None:
    try:
        log = parse_ima_log(data)
    except MalformedEvidence as exc:
        assert exc.where is not None and exc.where.startswith("IMA entry ")
        assert exc.offset is not None and 0 <= exc.offset <= len(data)
        return
    hasher = log.template_hash_alg.hasher
    for e in log.entries:
        assert e.violation or hasher(e.template_data).digest() == e.template_hash
        assert e.display_name.isprintable()
    replay_ima(log)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0),
)
def test_fuzz_mutated_logs(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    _check(bytes(data[: cut % (len(data) + 1)]))


_NAMES = st.binary(min_size=1, max_size=80).filter(lambda n: b"\0" not in n)
_ENTRIES = st.lists(
    st.tuples(
        _NAMES,
        st.binary(max_size=40),
        st.sampled_from(["ima-ng", "ima-sig", "ima-buf", "ima-modsig"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def _made(rows: list[tuple[bytes, bytes, str, bool]]) -> list[b.Made]:
    out = []
    for name, content, template, violation in rows:
        if violation:
            out.append(b.violation_entry(name))
        elif template == "ima-buf":
            out.append(b.buf_entry(name, content))
        else:
            out.append(b.file_entry(name, content, template=template))
    return out


@FUZZ
@given(_ENTRIES)
def test_made_entries_round_trip_through_binary(rows: list[tuple[bytes, bytes, str, bool]]) -> None:
    made = _made(rows)
    log = parse_ima_log(b.binary(made))
    assert [e.name for e in log.entries] == [r[0] for r in rows]
    for e, (_name, content, template, violation) in zip(log.entries, rows, strict=True):
        assert e.violation is violation
        if not violation:
            assert e.digest == hashlib.sha256(content).digest()
            assert e.template == template
    ascii_safe = all(b" " not in r[0] and b"\n" not in r[0] for r in rows)
    if ascii_safe:
        text = parse_ima_log(b.ascii_lines(made))
        assert [e._replace(offset=0, size=0) for e in text.entries] == [
            e._replace(offset=0, size=0) for e in log.entries
        ]


@FUZZ
@given(_ENTRIES, st.lists(st.integers(min_value=0), max_size=3))
def test_replay_in_chunks_equals_replay_of_the_whole(
    rows: list[tuple[bytes, bytes, str, bool]], cuts: list[int]
) -> None:
    made = _made(rows)
    data = b.binary(made)
    whole = parse_ima_log(data)
    bounds = sorted({c % (len(whole.entries) + 1) for c in cuts} | {0, len(whole.entries)})
    state = replay_ima(parse_ima_log(b""))
    for lo, hi in itertools.pairwise(bounds):
        start = whole.entries[lo].offset
        end = whole.entries[hi].offset if hi < len(whole.entries) else len(data)
        chunk = parse_ima_log(data[start:end], start_index=lo, start_offset=start)
        state = replay_from(state, chunk)
    assert state == replay_ima(whole)
    assert state.value(whole.template_hash_alg, 10) == b.expected_pcr(made, "sha1")
