"""The evidence wire format (assay.evidence): only MalformedEvidence ever escapes the decoder,
whatever the bytes; the encoder writes the bytes agents have always sent."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import EventLogUnreadable
from agent.evidence import encode_bundle, evidence_from_quote
from agent.tpm import QuoteResult
from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.evidence import (
    DEFAULT_CAPS,
    MAX_SMALL,
    MAX_TEXT,
    Evidence,
    EvidenceCaps,
    decode_evidence,
    encode_evidence,
)
from verifier.service.config import ServiceConfig

CAPS = EvidenceCaps(bundle=1 << 20, event_log=1 << 16, ima_log=1 << 16)

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
    ev = decode_evidence(cbor2.dumps(_good()), CAPS)
    assert ev.pcrs == {HashAlg.SHA256: {0: bytes(32), 7: b"\x01" * 32}}
    assert ev.event_log == b"log bytes" and ev.ima_log is None
    again = decode_evidence(encode_evidence(ev), CAPS)
    assert isinstance(again, Evidence) and again == ev


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_malformed_evidence(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        decode_evidence(data, CAPS)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KEYS), values)
def test_any_field_replaced_by_any_value_is_accepted_or_malformed(key: str, value: object) -> None:
    doc = _good()
    doc[key] = value
    try:
        ev = decode_evidence(cbor2.dumps(doc), CAPS)
    except MalformedEvidence:
        return
    assert ev.node == doc["node"]


def test_version_must_be_the_integer_one() -> None:
    for v in (True, 1.0, "1", 2):
        doc = _good()
        doc["v"] = v
        with pytest.raises(MalformedEvidence, match="unsupported version"):
            decode_evidence(cbor2.dumps(doc), CAPS)


def test_each_cap_is_enforced_before_use() -> None:
    doc = _good()
    doc["ima_log"] = b"x" * (CAPS.ima_log + 1)
    with pytest.raises(MalformedEvidence, match="'ima_log' is 65537 bytes"):
        decode_evidence(cbor2.dumps(doc), CAPS)
    with pytest.raises(MalformedEvidence, match="more than 100"):
        decode_evidence(cbor2.dumps(_good()), EvidenceCaps(bundle=100, event_log=10, ima_log=10))


# --- the encoder writes what agents have always sent ---------------------------------------------

VECTORS = Path(__file__).parent / "vectors" / "evidence"
EXAMPLE_LOG = b"\x00\x00\x00\x00\x03\x00\x00\x00" + b"log" * 10
EXAMPLE_QUOTE = QuoteResult(
    attest=b"\xff\x54\x43\x47" + bytes(range(40)),
    signature=b"\x00\x18\x00\x0b" + bytes(range(64)),
    nonce=bytes(range(32)),
    pcrs={
        HashAlg.SHA256: {7: b"\x07" * 32, 0: b"\x00" * 32, 14: b"\x0e" * 32},
        HashAlg.SHA1: {0: b"\x01" * 20},
    },
    ak_public=b"ak",
)


def _example() -> Evidence:
    """The vectors' bundle, built as the agent builds it (version pinned to the vectors')."""
    ev = evidence_from_quote("node-1", EXAMPLE_QUOTE, EXAMPLE_LOG, b"10 ima")
    return dataclasses.replace(ev, agent_version="0.1.0")


def test_the_agent_sends_the_bytes_of_the_0_1_0_agent() -> None:
    assert encode_bundle(_example()) == (VECTORS / "agent-0.1.0.cbor").read_bytes()


def test_the_agent_leaves_out_a_log_the_verifier_holds_as_the_0_1_0_agent_did() -> None:
    ev = _example()
    body = encode_bundle(ev, known_event_log_sha256=ev.event_log_sha256)
    assert body == (VECTORS / "agent-0.1.0-log-omitted.cbor").read_bytes()
    assert encode_bundle(ev, known_event_log_sha256=bytes(32)) == encode_bundle(ev)


def test_the_reassembled_evidence_is_the_canonical_form_the_verifier_always_returned() -> None:
    ev = decode_evidence((VECTORS / "agent-0.1.0.cbor").read_bytes())
    assert ev == _example()
    canonical = encode_evidence(ev, canonical=True)
    assert canonical == (VECTORS / "verifier-reassembled.cbor").read_bytes()
    assert decode_evidence(canonical) == ev


def test_the_agent_refuses_to_send_a_bundle_over_the_cap() -> None:
    ev = dataclasses.replace(_example(), ima_log=b"i" * DEFAULT_CAPS.bundle)
    with pytest.raises(EventLogUnreadable, match="exceeds 20971520"):
        encode_bundle(ev)


def test_the_verifier_defaults_are_the_wire_format_caps() -> None:
    config = ServiceConfig()
    caps = EvidenceCaps(config.max_bundle, config.max_event_log, config.max_ima_log)
    assert caps == DEFAULT_CAPS == EvidenceCaps(20 << 20, 1 << 20, 16 << 20)


# --- round trip ----------------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=MAX_TEXT)
banks = st.lists(st.sampled_from(list(HashAlg)), min_size=1, max_size=5, unique=True)


@st.composite
def bundles(draw: st.DrawFn) -> Evidence:
    pcrs = {
        alg: draw(
            st.dictionaries(
                st.integers(0, 23),
                st.binary(min_size=alg.digest_size, max_size=alg.digest_size),
                max_size=24,
            )
        )
        for alg in draw(banks)
    }
    log = draw(st.none() | st.binary(max_size=200))
    return Evidence(
        node=draw(texts),
        agent_version=draw(texts),
        nonce=draw(st.binary(max_size=64)),
        attest=draw(st.binary(max_size=MAX_SMALL)),
        signature=draw(st.binary(max_size=300)),
        pcrs=pcrs,
        event_log_sha256=(
            hashlib.sha256(log).digest()
            if log is not None
            else draw(st.binary(min_size=32, max_size=32))
        ),
        event_log=log,
        ima_log=draw(st.none() | st.binary(max_size=200)),
    )


@settings(max_examples=300, deadline=None)
@given(bundles(), st.booleans())
def test_every_bundle_round_trips_in_either_form(ev: Evidence, canonical: bool) -> None:
    data = encode_evidence(ev, canonical=canonical)
    assert decode_evidence(data) == ev
    assert encode_evidence(decode_evidence(data), canonical=canonical) == data


# --- hostile bundles: one line naming the field ------------------------------------------------

BIGNUM = cbor2.CBORTag(2, b"\xff" * 2000)


def _with(**over: object) -> bytes:
    doc = _good()
    doc.update(over)
    return cbor2.dumps({k: v for k, v in doc.items() if v is not None})


HOSTILE: list[tuple[str, bytes, str]] = [
    ("bundle over the cap", _with(event_log=None, ima_log=b"i" * (1 << 20)), "more than 1048576"),
    ("event log over the cap", _with(event_log=b"l" * (CAPS.event_log + 1)), "'event_log' is 65537 bytes"),
    ("nonce over 4096", _with(nonce=b"n" * 4097), "'nonce' is 4097 bytes"),
    ("attest over 4096", _with(attest=b"a" * 4097), "'attest' is 4097 bytes"),
    ("signature over 4096", _with(signature=b"s" * 4097), "'signature' is 4097 bytes"),
    ("node over 253", _with(node="n" * 254), "'node' must be a short text string"),
    ("node as bytes", _with(node=b"n1"), "'node' must be a short text string"),
    ("no node", _with(node=None), "'node' must be a short text string"),
    ("agent_version as int", _with(agent_version=7), "'agent_version' must be a short text"),
    ("nonce as text", _with(nonce="00"), "'nonce' must be a byte string"),
    ("no signature", _with(signature=None), "'signature' must be a byte string"),
    ("log digest of 31 bytes", _with(event_log=None, event_log_sha256=bytes(31)), "'event_log_sha256' must be 32 bytes"),
    ("log digest as text", _with(event_log_sha256="ab" * 32), "'event_log_sha256' must be a byte string"),
    ("log not matching its digest", _with(event_log=b"other"), "'event_log' does not hash"),
    ("ima log as text", _with(ima_log="x"), "'ima_log' must be a byte string"),
    ("pcrs as list", _with(pcrs=[1]), "'pcrs' must map 1..5 bank names"),
    ("no banks", _with(pcrs={}), "'pcrs' must map 1..5 bank names"),
    ("six banks", _with(pcrs={f"b{i}": {} for i in range(6)}), "'pcrs' must map 1..5 bank names"),
    ("unknown bank", _with(pcrs={"md5": {0: bytes(16)}}), "unknown or repeated bank 'md5'"),
    ("bank as int", _with(pcrs={11: {0: bytes(32)}}), "unknown or repeated bank 11"),
    ("repeated bank", _with(pcrs={"sha256": {}, "SHA-256": {}}), "unknown or repeated bank 'SHA-256'"),
    ("bank values as list", _with(pcrs={"sha256": [bytes(32)]}), "'pcrs'.sha256 must map PCR indices"),
    ("25 PCRs", _with(pcrs={"sha256": dict.fromkeys(range(25), bytes(32))}), "'pcrs'.sha256 must map PCR indices"),
    ("PCR 24", _with(pcrs={"sha256": {24: bytes(32)}}), "bad PCR index 24"),
    ("PCR -1", _with(pcrs={"sha256": {-1: bytes(32)}}), "bad PCR index -1"),
    ("PCR as text", _with(pcrs={"sha256": {"0": bytes(32)}}), "bad PCR index '0'"),
    ("PCR as true", _with(pcrs={"sha256": {True: bytes(32)}}), "map keys must be integers or text"),
    ("short digest", _with(pcrs={"sha256": {0: bytes(20)}}), "'pcrs'.sha256[0] must be 32 bytes"),
    ("version 2", _with(v=2), "unsupported version 2 (want 1)"),
    ("no version", _with(v=None), "unsupported version null"),
    ("not a map", cbor2.dumps([1, 2]), "not a CBOR map"),
    ("bignum PCR index", _with(pcrs={"sha256": {BIGNUM: bytes(32)}}), "semantic tags are not accepted"),
    ("date node", _with(node=cbor2.CBORTag(1, 0)), "semantic tags are not accepted"),
    ("deep nesting", _with(extra=[[[[[[[[[0]]]]]]]]]), "nested deeper than 8"),
    ("indefinite map", b"\xbf\x61v\x01\xff", "indefinite lengths are not accepted"),
    ("trailing bytes", _with() + b"\x00", "bytes after the end of the item"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "needle"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_hostile_bundle_is_one_line_naming_the_problem(
    case: str, data: bytes, needle: str
) -> None:
    with pytest.raises(MalformedEvidence) as info:
        decode_evidence(data, CAPS)
    message = str(info.value)
    assert message.startswith("evidence bundle: ") and needle in message, message
    assert "\n" not in message and len(message) < 200


def test_unknown_keys_are_ignored() -> None:
    ev = decode_evidence(_with(future_field={"x": [1, 2]}, ima_log=b"ima"), CAPS)
    assert ev == decode_evidence(_with(ima_log=b"ima"), CAPS)
    assert ev.ima_log == b"ima"


def test_a_bundle_without_its_log_keeps_the_digest() -> None:
    ev = decode_evidence(_with(event_log=None), CAPS)
    assert ev.event_log is None and ev.event_log_sha256 == hashlib.sha256(b"log bytes").digest()
    assert ev.agent_version == "a/1"
    assert decode_evidence(_with(agent_version=None), CAPS).agent_version == ""
