"""The evidence-bundle decoder: only MalformedEvidence ever escapes, whatever the bytes."""

from __future__ import annotations

import contextlib
import hashlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from verifier.service.evidence import Evidence, encode_evidence, parse_evidence

CAPS = {"max_bundle": 1 << 20, "max_event_log": 1 << 16, "max_ima": 1 << 16}

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.floats(allow_nan=False),
)
values = st.recursive(
    leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 30)), c, max_size=4),
    ),
    max_leaves=20,
)
KEYS = [
    "v",
    "node",
    "agent_version",
    "nonce",
    "attest",
    "signature",
    "pcrs",
    "event_log_sha256",
    "event_log",
    "ima_log",
]


def _good() -> dict[str, object]:
    log = b"log bytes"
    return {
        "v": 1,
        "node": "n1",
        "agent_version": "a/1",
        "nonce": bytes(32),
        "attest": b"a",
        "signature": b"s",
        "pcrs": {"sha256": {0: bytes(32), 7: b"\x01" * 32}},
        "event_log_sha256": hashlib.sha256(log).digest(),
        "event_log": log,
    }


def test_a_good_bundle_decodes_and_round_trips() -> None:
    ev = parse_evidence(cbor2.dumps(_good()), **CAPS)
    assert ev.pcrs == {HashAlg.SHA256: {0: bytes(32), 7: b"\x01" * 32}}
    assert ev.event_log == b"log bytes" and ev.ima_log is None
    again = parse_evidence(encode_evidence(ev), **CAPS)
    assert isinstance(again, Evidence) and again == ev


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_malformed_evidence(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        parse_evidence(data, **CAPS)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KEYS), values)
def test_any_field_replaced_by_any_value_is_accepted_or_malformed(key: str, value: object) -> None:
    doc = _good()
    doc[key] = value
    try:
        ev = parse_evidence(cbor2.dumps(doc), **CAPS)
    except MalformedEvidence:
        return
    assert ev.node == doc["node"]


def test_version_must_be_the_integer_one() -> None:
    for v in (True, 1.0, "1", 2):
        doc = _good()
        doc["v"] = v
        with pytest.raises(MalformedEvidence, match="unsupported version"):
            parse_evidence(cbor2.dumps(doc), **CAPS)


def test_each_cap_is_enforced_before_use() -> None:
    doc = _good()
    doc["ima_log"] = b"x" * (CAPS["max_ima"] + 1)
    with pytest.raises(MalformedEvidence, match="'ima_log' is 65537 bytes"):
        parse_evidence(cbor2.dumps(doc), **CAPS)
    with pytest.raises(MalformedEvidence, match="more than 100"):
        parse_evidence(cbor2.dumps(_good()), max_bundle=100, max_event_log=10, max_ima=10)
