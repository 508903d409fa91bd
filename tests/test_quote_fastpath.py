"""The shortcuts in quote verification give exactly the answers of the long way.

``scan_attest`` guesses a selection's length and looks it up among decoded selections,
``scan_signature`` has an RSA fast path, steps 2-3 are cached per (AK bytes, sigAlg, hash), and
step 8 reads values through a cached layout; each is checked here against the general path, and
the PCR value size check is shown to matter even when the digest matches.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import (
    Alg,
    ObjectAttributes,
    Scheme,
    Signature,
    VerifiedQuote,
    marshal_quote_attest,
    marshal_signature,
    public_from_key,
    verify_quote,
)
from assay.tpm2 import attest as attest_mod
from assay.tpm2.attest import scan_attest, scan_signature

SHA1, SHA256 = HashAlg.SHA1, HashAlg.SHA256
AK_ATTRS = ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED
KEY = rsa.generate_private_key(65537, 2048)
AK = public_from_key(KEY.public_key(), attributes=AK_ATTRS, scheme=Scheme(Alg.RSASSA, SHA256))
NONCE = bytes(range(32))


def _quote(pcrs: dict[HashAlg, dict[int, bytes]], nonce: bytes = NONCE) -> tuple[bytes, bytes]:
    """(TPMS_ATTEST, TPMT_SIGNATURE) over ``pcrs``, banks in the given order, PCRs ascending."""
    joined = b"".join(pcrs[bank][i] for bank in pcrs for i in sorted(pcrs[bank]))
    selection = {bank: sorted(values) for bank, values in pcrs.items()}
    attest = marshal_quote_attest(selection, SHA256.hash(joined), nonce)
    raw = KEY.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    return attest, marshal_signature(Signature(Alg.RSASSA, SHA256, raw))


def _values(bank: HashAlg, pcrs: range | tuple[int, ...]) -> dict[int, bytes]:
    return {i: bank.hash(bytes([i])) for i in pcrs}


def test_values_that_concatenate_right_but_have_wrong_sizes_are_malformed() -> None:
    # PCR 0 is 31 bytes and PCR 1 is 33: together the same 64 bytes, so the digest matches.
    good = _values(SHA256, range(4))
    attest, sig = _quote({SHA256: good})
    assert verify_quote(attest, sig, AK, NONCE, {SHA256: good}).pcrs[SHA256][1] == good[1]
    shifted = dict(good)
    shifted[0], shifted[1] = good[0][:31], good[0][31:] + good[1]
    assert b"".join(shifted[i] for i in range(4)) == b"".join(good[i] for i in range(4))
    with pytest.raises(MalformedEvidence, match="sha256 PCR 0 value is 31 bytes, not 32"):
        verify_quote(attest, sig, AK, NONCE, {SHA256: shifted})


def test_a_too_long_value_in_a_second_bank_is_named() -> None:
    pcrs = {SHA1: _values(SHA1, (0, 7)), SHA256: _values(SHA256, (0, 7))}
    attest, sig = _quote(pcrs)
    pcrs[SHA256][7] += b"\x00"
    with pytest.raises(MalformedEvidence, match="sha256 PCR 7 value is 33 bytes, not 32"):
        verify_quote(attest, sig, AK, NONCE, pcrs)


def test_two_banks_verify_in_quoted_bank_order_after_a_one_bank_selection_is_cached() -> None:
    one = {SHA256: _values(SHA256, range(8))}
    verify_quote(*_quote(one), AK, NONCE, one)
    two = {SHA256: _values(SHA256, (1, 2)), SHA1: _values(SHA1, (3,))}
    quote = verify_quote(*_quote(two), AK, NONCE, two)
    assert [bank for bank, _ in quote.selection.banks] == [SHA256, SHA1]
    assert quote.values == (two[SHA256][1], two[SHA256][2], two[SHA1][3])
    assert {b: dict(v) for b, v in quote.pcrs.items()} == two


def test_extra_or_missing_pcr_is_a_selection_mismatch_with_a_cached_layout() -> None:
    pcrs = {SHA256: _values(SHA256, range(8))}
    attest, sig = _quote(pcrs)
    verify_quote(attest, sig, AK, NONCE, pcrs)
    extra = {SHA256: {**pcrs[SHA256], 9: bytes(32)}}
    missing = {SHA256: {i: v for i, v in pcrs[SHA256].items() if i != 3}}
    swapped = {SHA256: {**missing[SHA256], 9: pcrs[SHA256][3]}}
    other_bank = {**pcrs, SHA1: {0: bytes(20)}}
    for supplied in (extra, missing, swapped, other_bank):
        with pytest.raises(VerificationFailed) as err:
            verify_quote(attest, sig, AK, NONCE, supplied)
        assert err.value.code == "pcr_selection_mismatch"


def test_a_cached_selection_ending_the_input_still_needs_a_pcr_digest() -> None:
    pcrs = {SHA256: _values(SHA256, range(3))}
    attest, _ = _quote(pcrs)
    scan_attest(attest)  # caches the selection
    selection_end = len(attest) - 2 - 32
    with pytest.raises(MalformedEvidence, match="pcrDigest size missing"):
        scan_attest(attest[:selection_end])
    with pytest.raises(MalformedEvidence, match="pcrDigest size 32 exceeds the input"):
        scan_attest(attest[:-1])
    with pytest.raises(MalformedEvidence, match="1 trailing bytes"):
        scan_attest(attest + b"\x00")


def _scan_cold(data: bytes) -> object:
    """scan_attest with no selection decoded before: always the full TPML_PCR_SELECTION parse."""
    saved = dict(attest_mod._SELECTIONS)
    attest_mod._SELECTIONS.clear()
    try:
        return _result(scan_attest, data)
    finally:
        attest_mod._SELECTIONS.clear()
        attest_mod._SELECTIONS.update(saved)


def _result(fn: Callable[[bytes], object], data: bytes) -> object:
    try:
        return fn(data)
    except MalformedEvidence as err:
        return ("MalformedEvidence", str(err))


SEED_QUOTES = [
    _quote({SHA256: _values(SHA256, range(10))})[0],
    _quote({SHA256: _values(SHA256, (0,)), SHA1: _values(SHA1, (23,))})[0],
    _quote({SHA1: _values(SHA1, range(24))})[0],
]


@settings(max_examples=400, deadline=None)
@given(
    seed=st.sampled_from(SEED_QUOTES),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
    cut=st.integers(0, 8),
)
def test_scan_attest_with_cached_selections_equals_a_cold_parse(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    for quote in SEED_QUOTES:  # warm: every seed selection is cached
        scan_attest(quote)
    data = bytearray(seed)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    mutated = bytes(data[: len(data) - cut])
    assert _result(scan_attest, mutated) == _scan_cold(mutated)


def _scan_signature_general(data: bytes) -> object:
    return _result(attest_mod._scan_signature, data)


@settings(max_examples=400, deadline=None)
@given(
    alg=st.sampled_from([0x0014, 0x0016, 0x0018, 0x0005, 0x0001]),
    hash_id=st.sampled_from([0x0004, 0x000B, 0x000C, 0x0099]),
    declared=st.integers(0, 600),
    body=st.binary(max_size=520),
)
def test_signature_fast_path_equals_the_general_parse(
    alg: int, hash_id: int, declared: int, body: bytes
) -> None:
    data = struct.pack(">HHH", alg, hash_id, declared) + body
    assert _result(scan_signature, data) == _scan_signature_general(data)


def test_scheme_cache_tells_a_tpm_ak_from_a_pem_stand_in_with_the_same_bytes() -> None:
    pcrs = {SHA256: _values(SHA256, range(2))}
    attest, sig = _quote(pcrs)
    unrestricted = ObjectAttributes.SIGN_ENCRYPT
    pem_ak = public_from_key(KEY.public_key(), attributes=unrestricted, from_spki=True)
    tpm_ak = public_from_key(KEY.public_key(), attributes=unrestricted)
    assert pem_ak.raw == tpm_ak.raw
    assert verify_quote(attest, sig, pem_ak, NONCE, pcrs).values == (
        pcrs[SHA256][0],
        pcrs[SHA256][1],
    )
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, tpm_ak, NONCE, pcrs)
    assert err.value.code == "ak_not_restricted"
    rsapss = public_from_key(
        KEY.public_key(), attributes=AK_ATTRS, scheme=Scheme(Alg.RSAPSS, SHA256)
    )
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, rsapss, NONCE, pcrs)
    assert err.value.code == "scheme_mismatch"


def test_verified_quote_is_immutable_and_carries_what_was_verified() -> None:
    pcrs = {SHA256: _values(SHA256, (0, 4, 7))}
    nonce = os.urandom(20)
    attest, sig = _quote(pcrs, nonce)
    quote = verify_quote(attest, sig, AK, nonce, pcrs)
    assert isinstance(quote, VerifiedQuote)
    assert (quote.attest, quote.hash_alg, quote.nonce) == (attest, SHA256, nonce)
    assert quote.values == (pcrs[SHA256][0], pcrs[SHA256][4], pcrs[SHA256][7])
    assert quote.selection.to_json() == {"sha256": [0, 4, 7]}
    assert attest[quote.clock_offset - len(nonce) : quote.clock_offset] == nonce
    with pytest.raises(AttributeError):
        quote.values = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        quote.pcrs[SHA256][0] = bytes(32)  # type: ignore[index]
