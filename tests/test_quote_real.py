"""The real Windows quote from go-attestation's testdata (GCE Shielded VM, TPM 2.0, SHA-1 bank).

go-attestation recorded it with an empty nonce: extraData is empty in the signed TPMS_ATTEST and
``Quote.Nonce`` is "" in the JSON. The PCR values are ``Log.PCRs`` (== the corpus expected_pcrs).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import (
    Alg,
    AttestType,
    ObjectAttributes,
    Scheme,
    Signature,
    marshal_quote_attest,
    marshal_signature,
    parse_attest,
    parse_public,
    parse_signature,
    public_from_key,
    verify_quote,
)
from verifier._cli import main

from .conftest import CORPUS

WINDOWS = CORPUS / "go-attestation" / "windows_gcp_shielded_vm.json"
EXPECTED = CORPUS / "go-attestation" / "windows_gcp_shielded_vm.expected_pcrs.json"


def _b64(doc: dict[str, Any], *keys: str) -> bytes:
    value: Any = doc
    for key in keys:
        value = value[key]
    return base64.b64decode(value)


@pytest.fixture(scope="module")
def win() -> dict[str, Any]:
    doc = json.loads(WINDOWS.read_text())
    pcrs = {p["Index"]: base64.b64decode(p["Digest"]) for p in doc["Log"]["PCRs"]}
    assert all(p["DigestAlg"] == 3 for p in doc["Log"]["PCRs"])  # Go crypto.SHA1
    return {
        "ak": _b64(doc, "AK", "Public"),
        "attest": _b64(doc, "Quote", "Quote"),
        "sig": _b64(doc, "Quote", "Signature"),
        "nonce": _b64(doc, "Quote", "Nonce"),
        "pcrs": {HashAlg.SHA1: pcrs},
        "create_attest": _b64(doc, "AK", "CreateAttestation"),
        "create_sig": _b64(doc, "AK", "CreateSignature"),
    }


def _verify(win: dict[str, Any], **changes: Any) -> Any:
    args = {k: win[k] for k in ("attest", "sig", "nonce", "pcrs")} | changes
    ak = parse_public(win["ak"])
    return verify_quote(args["attest"], args["sig"], ak, args["nonce"], args["pcrs"])


def test_real_windows_quote_verifies_with_its_values(win: dict[str, Any]) -> None:
    quote = _verify(win)
    assert win["nonce"] == b"" and quote.nonce == b""
    assert quote.selection.to_json() == {"sha1": list(range(24))}
    assert quote.hash_alg == HashAlg.SHA1
    assert quote.pcr_digest.hex() == "a610f27bc687ce906243287d832706036e79f6e1"
    assert (quote.clock, quote.reset_count, quote.restart_count) == (
        10257171,
        1045281252,
        822490842,
    )
    assert quote.safe is True
    assert quote.firmware_version == 0x41E4356DF966E035
    assert quote.qualified_signer.hex().startswith("000bad427e7f")
    expected = json.loads(EXPECTED.read_text())["pcrs"]["sha1"]
    assert {str(k): v.hex() for k, v in quote.pcrs[HashAlg.SHA1].items()} == expected
    assert quote.attest == win["attest"]


def test_real_ak_parses_and_its_name_is_the_one_the_tpm_certified(win: dict[str, Any]) -> None:
    ak = parse_public(win["ak"])
    assert ak.type == Alg.RSA and ak.name_alg == HashAlg.SHA256
    assert ak.object_attributes & ObjectAttributes.RESTRICTED
    assert ak.object_attributes & ObjectAttributes.SIGN_ENCRYPT
    assert not ak.object_attributes & ObjectAttributes.DECRYPT
    assert ak.scheme == Scheme(Alg.RSASSA, HashAlg.SHA1)
    assert ak.public_key().key_size == 2048
    # TPM2_CertifyCreation's TPMS_CREATION_INFO starts with the object's Name as the TPM computed it.
    creation = parse_attest(win["create_attest"])
    assert creation.type == AttestType.CREATION
    assert creation.attested[:2] == b"\x00\x22"
    assert creation.attested[2:36] == ak.name


def test_real_creation_attestation_is_signed_but_not_a_quote(win: dict[str, Any]) -> None:
    with pytest.raises(VerificationFailed) as err:
        _verify(win, attest=win["create_attest"], sig=win["create_sig"])
    assert err.value.code == "not_a_quote"


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def test_every_single_byte_change_of_the_attest_fails(win: dict[str, Any]) -> None:
    attest = win["attest"]
    for pos in range(len(attest)):
        with pytest.raises((VerificationFailed, MalformedEvidence)):
            _verify(win, attest=_flip(attest, pos))


@pytest.mark.parametrize(
    ("pos", "code"),
    [
        (0, "bad_signature"),
        (4, "bad_signature"),
        (20, "bad_signature"),
        (50, "bad_signature"),
        (-20, "bad_signature"),
        (-1, "bad_signature"),
    ],
)
def test_attest_byte_change_is_a_bad_signature(win: dict[str, Any], pos: int, code: str) -> None:
    attest = win["attest"]
    with pytest.raises(VerificationFailed) as err:
        _verify(win, attest=_flip(attest, pos % len(attest)))
    assert err.value.code == code


def test_every_single_byte_change_of_the_signature_fails(win: dict[str, Any]) -> None:
    sig = win["sig"]
    codes = set()
    for pos in range(len(sig)):
        with pytest.raises((VerificationFailed, MalformedEvidence)) as err:
            _verify(win, sig=_flip(sig, pos))
        codes.add(getattr(err.value, "code", "malformed"))
        if pos >= 6:
            assert getattr(err.value, "code", None) == "bad_signature", pos
    assert "bad_signature" in codes and "malformed" in codes


@pytest.mark.parametrize("nonce", [b"\x00", b"\x01" * 32, bytes(20)])
def test_any_other_nonce_fails(win: dict[str, Any], nonce: bytes) -> None:
    with pytest.raises(VerificationFailed) as err:
        _verify(win, nonce=nonce)
    assert err.value.code == "nonce_mismatch"


@pytest.mark.parametrize("pcr", [0, 7, 12, 23])
@pytest.mark.parametrize("pos", [0, 10, 19])
def test_a_changed_pcr_value_fails_the_digest(win: dict[str, Any], pcr: int, pos: int) -> None:
    values = dict(win["pcrs"][HashAlg.SHA1])
    values[pcr] = _flip(values[pcr], pos)
    with pytest.raises(VerificationFailed) as err:
        _verify(win, pcrs={HashAlg.SHA1: values})
    assert err.value.code == "pcr_digest_mismatch"


def test_a_missing_pcr_is_a_selection_mismatch(win: dict[str, Any]) -> None:
    values = dict(win["pcrs"][HashAlg.SHA1])
    del values[23]
    with pytest.raises(VerificationFailed) as err:
        _verify(win, pcrs={HashAlg.SHA1: values})
    assert err.value.code == "pcr_selection_mismatch"
    assert "quoted but not supplied: sha1:23" in str(err.value)


def test_an_extra_pcr_is_a_selection_mismatch(win: dict[str, Any]) -> None:
    values = dict(win["pcrs"][HashAlg.SHA1])
    values[24] = bytes(20)
    with pytest.raises(VerificationFailed) as err:
        _verify(win, pcrs={HashAlg.SHA1: values})
    assert err.value.code == "pcr_selection_mismatch"


def test_an_extra_bank_is_a_selection_mismatch(win: dict[str, Any]) -> None:
    pcrs = dict(win["pcrs"]) | {HashAlg.SHA256: {0: bytes(32)}}
    with pytest.raises(VerificationFailed) as err:
        _verify(win, pcrs=pcrs)
    assert err.value.code == "pcr_selection_mismatch"
    assert "supplied values not quoted: sha256:0" in str(err.value)


def test_sha1_values_beside_a_sha256_quote_are_refused() -> None:
    """CVE-2022-0317: a SHA-256 quote must not lend its signature to SHA-1 values beside it."""
    key = ec.generate_private_key(ec.SECP256R1())
    ak = public_from_key(
        key.public_key(),
        attributes=ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED,
        scheme=Scheme(Alg.ECDSA, HashAlg.SHA256),
    )
    sha256 = {i: os.urandom(32) for i in range(8)}
    digest = HashAlg.SHA256.hash(b"".join(sha256[i] for i in range(8)))
    nonce = os.urandom(32)
    attest = marshal_quote_attest({HashAlg.SHA256: range(8)}, digest, nonce)
    r, s = decode_dss_signature(key.sign(attest, ec.ECDSA(hashes.SHA256())))
    sig = marshal_signature(
        Signature(Alg.ECDSA, HashAlg.SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big"))
    )
    assert verify_quote(attest, sig, ak, nonce, {HashAlg.SHA256: sha256}).pcrs[HashAlg.SHA256]
    forged = {HashAlg.SHA256: sha256, HashAlg.SHA1: {i: bytes(20) for i in range(8)}}
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, ak, nonce, forged)
    assert err.value.code == "pcr_selection_mismatch"
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, ak, nonce, {HashAlg.SHA1: {i: bytes(20) for i in range(8)}})
    assert err.value.code == "pcr_selection_mismatch"


def test_parsed_signature_fields(win: dict[str, Any]) -> None:
    sig = parse_signature(win["sig"])
    assert (sig.scheme, sig.hash_alg, len(sig.sig)) == (Alg.RSASSA, HashAlg.SHA1, 256)


# -- the command line --------------------------------------------------------------------------


@pytest.fixture()
def files(win: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, key in (("ak", "ak"), ("attest", "attest"), ("sig", "sig")):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(win[key])
        out[name] = str(path)
    # the TPM2B forms, detected
    (tmp_path / "ak2b.bin").write_bytes(len(win["ak"]).to_bytes(2, "big") + win["ak"])
    (tmp_path / "attest2b.bin").write_bytes(len(win["attest"]).to_bytes(2, "big") + win["attest"])
    out["ak2b"], out["attest2b"] = str(tmp_path / "ak2b.bin"), str(tmp_path / "attest2b.bin")
    ak_key = parse_public(win["ak"]).public_key()
    pem = ak_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "ak.pem").write_bytes(pem)
    out["pem"] = str(tmp_path / "ak.pem")
    out["dir"] = str(tmp_path)
    return out


def _cli(files: dict[str, str], *extra: str, ak: str = "ak", attest: str = "attest") -> list[str]:
    return [
        "quote",
        "verify",
        "--ak-public",
        files[ak],
        "--attest",
        files[attest],
        "--signature",
        files["sig"],
        *extra,
    ]


@pytest.mark.parametrize(
    ("ak", "attest"), [("ak", "attest"), ("ak2b", "attest2b"), ("pem", "attest")]
)
def test_cli_verifies_the_real_quote_with_the_corpus_pcrs(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], ak: str, attest: str
) -> None:
    rc = main(_cli(files, "--nonce", "", "--pcrs", str(EXPECTED), "--json", ak=ak, attest=attest))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["valid"] is True and out["pcrs_checked"] is True
    assert out["reset_count"] == 1045281252 and out["restart_count"] == 822490842
    assert out["safe"] is True and out["clock"] == 10257171
    assert out["pcr_selection"] == {"sha1": list(range(24))}
    assert out["pcrs_used"]["sha1"]["0"] == "51c323de0c0c694f4601cdd02beb58ff13629f74"
    assert out.get("ak_attributes_checked", True) is (ak != "pem")


def test_cli_without_pcrs_never_claims_they_were_checked(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(_cli(files, "--nonce", "", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["valid"] is True
    assert out["pcrs_checked"] is False and out["pcrs_used"] is None
    assert "NOT checked" in out["reason"]


def test_cli_pcr_missing_from_the_file_is_a_selection_mismatch(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(EXPECTED.read_text())
    del doc["pcrs"]["sha1"]["23"]
    path = Path(files["dir"]) / "pcrs.json"
    path.write_text(json.dumps(doc))
    rc = main(_cli(files, "--nonce", "", "--pcrs", str(path), "--json"))
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["valid"] is False and out["code"] == "pcr_selection_mismatch"


def test_cli_changed_pcr_and_wrong_nonce_are_invalid(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(EXPECTED.read_text())
    doc["pcrs"]["sha1"]["7"] = "00" * 20
    path = Path(files["dir"]) / "pcrs.json"
    path.write_text(json.dumps(doc))
    assert main(_cli(files, "--nonce", "", "--pcrs", str(path), "--json")) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "pcr_digest_mismatch"
    assert main(_cli(files, "--nonce", "00")) == 1
    human = capsys.readouterr().out
    assert "INVALID" in human and "nonce_mismatch" in human


@pytest.mark.parametrize("bad", ["truncated", "junk_pcrs", "bad_nonce"])
def test_cli_malformed_input_exits_2_naming_the_file(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    args = _cli(files, "--nonce", "")
    if bad == "truncated":
        Path(files["attest"]).write_bytes(Path(files["attest"]).read_bytes()[:-3])
    elif bad == "junk_pcrs":
        path = Path(files["dir"]) / "junk.json"
        path.write_text('{"pcrs": {"sha1": {"0": "zz"}}}')
        args += ["--pcrs", str(path)]
    else:
        args[-1] = "xyz"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {"truncated": files["attest"], "junk_pcrs": "junk.json", "bad_nonce": "nonce"}[
        bad
    ] in err
