"""The agent's TPM side against real swtpm nodes (never a mock TPM).

One TPM is manufactured per session (swtpm_setup + a local CA) and cloned per test; a second,
independently manufactured TPM provides "another EK".
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from agent._cli import main as cli
from agent.errors import EXIT_OK, TpmFailure
from agent.tpm import AkBlobs, Tpm
from assay.algorithms import HashAlg
from assay.errors import VerificationFailed
from assay.tpm2 import make_credential, parse_public, verify_quote
from testkit import swtpm

pytestmark = pytest.mark.swtpm

SELECTION = {HashAlg.SHA256: (*range(10), 14)}


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("factory")
    swtpm.provision(base / "tpm-a", base / "ca")
    swtpm.provision(base / "tpm-b", base / "ca-other")
    swtpm.export_ca(base / "ca", base / "vendor-ca")
    return {"base": base, "a": base / "tpm-a", "b": base / "tpm-b"}


@pytest.fixture()
def node(factory: dict[str, Path], tmp_path: Path) -> Iterator[swtpm.SwtpmNode]:
    copy = swtpm.clone(swtpm.SwtpmNode(factory["a"]), tmp_path / "node")
    with swtpm.running(copy) as started:
        yield started


@pytest.fixture()
def other_node(factory: dict[str, Path], tmp_path: Path) -> Iterator[swtpm.SwtpmNode]:
    copy = swtpm.clone(swtpm.SwtpmNode(factory["b"]), tmp_path / "other")
    with swtpm.running(copy) as started:
        yield started


def _transient_and_sessions(tpm: Tpm) -> list[int]:
    from tpm2_pytss import TPM2_CAP

    handles: list[int] = []
    for first in (0x80000000, 0x02000000, 0x03000000):
        _, data = tpm.esys.get_capability(TPM2_CAP.HANDLES, first, 64)
        handles += [int(h) for h in data.data.handles if (int(h) >> 24) == first >> 24]
    return handles


def test_ek_certificate_is_read_from_nv_and_chains_to_the_local_ca(
    node: swtpm.SwtpmNode, factory: dict[str, Path]
) -> None:
    with Tpm(node.tcti) as tpm:
        ek = tpm.endorsement_key()
    assert ek.kind == "rsa" and ek.cert_index == 0x01C00002 and ek.cert is not None
    cert = x509.load_der_x509_certificate(ek.cert)
    vendor = factory["base"] / "vendor-ca"
    issuer = x509.load_pem_x509_certificate((vendor / "assay-swtpm-issuer.pem").read_bytes())
    root = x509.load_pem_x509_certificate((vendor / "assay-swtpm-root.pem").read_bytes())
    # The chain EK cert -> issuing CA -> self-signed root, each signature checked.
    cert.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The certified key is the key the TPM derives from the TCG default template.
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*der) == parse_public(
        ek.public
    ).public_key().public_bytes(*der)


def test_ek_certificate_of_another_manufacturer_does_not_chain(
    other_node: swtpm.SwtpmNode, factory: dict[str, Path]
) -> None:
    with Tpm(other_node.tcti) as tpm:
        ek = tpm.endorsement_key()
    assert ek.cert is not None
    cert = x509.load_der_x509_certificate(ek.cert)
    issuer_pem = (factory["base"] / "vendor-ca" / "assay-swtpm-issuer.pem").read_bytes()
    with pytest.raises((InvalidSignature, ValueError)):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(issuer_pem))


def test_ecc_ek_is_created_from_the_p256_template(node: swtpm.SwtpmNode) -> None:
    with Tpm(node.tcti) as tpm:
        ek = tpm.endorsement_key("ecc")
    public = parse_public(ek.public)
    assert ek.kind == "ecc" and ek.cert is None  # swtpm certifies only its RSA and P-384 EKs
    assert public.name == ek.name and public.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_ak_is_created_once_and_reused_after_agent_and_tpm_restart(
    node: swtpm.SwtpmNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    args = ["--tcti", node.tcti, "--state-dir", str(state), "--json", "ak", "create"]
    assert cli(args) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    assert first["created"] is True
    assert (state / "ak.json").stat().st_mode & 0o777 == 0o600
    swtpm.stop(node)
    with swtpm.running(node) as restarted:
        args[1] = restarted.tcti
        assert cli(args) == EXIT_OK
        second = json.loads(capsys.readouterr().out)
        assert second["created"] is False and second["name"] == first["name"]
        ak_public = parse_public(base64.b64decode(second["public"]))
        assert ak_public.name.hex() == first["name"]
        # The reused AK still loads under the re-derived EK and signs a verifiable quote.
        assert cli(["--tcti", restarted.tcti, "--state-dir", str(state), "--json",
                    "quote", "--nonce", "aa" * 16]) == EXIT_OK  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        verify_quote(
            base64.b64decode(doc["attest"]),
            base64.b64decode(doc["signature"]),
            ak_public,
            bytes.fromhex(doc["nonce"]),
            {HashAlg.SHA256: {int(k): bytes.fromhex(v) for k, v in doc["pcrs"]["sha256"].items()}},
        )


def _quote_json(
    node: swtpm.SwtpmNode, state: Path, nonce: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    argv = ["--tcti", node.tcti, "--state-dir", str(state), "quote", "--json", "--nonce", nonce]
    assert cli(argv) == EXIT_OK
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def test_quote_json_has_exactly_the_documented_fields_and_verifies(
    node: swtpm.SwtpmNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nonce = os.urandom(32).hex()
    doc = _quote_json(node, tmp_path / "s", nonce, capsys)
    assert set(doc) == {"attest", "signature", "ak_public", "nonce", "pcrs"}
    pcrs_doc = doc["pcrs"]
    assert isinstance(pcrs_doc, dict) and list(pcrs_doc) == ["sha256"]
    assert sorted(map(int, pcrs_doc["sha256"])) == [*range(10), 14]
    pcrs = {HashAlg.SHA256: {int(k): bytes.fromhex(v) for k, v in pcrs_doc["sha256"].items()}}
    ak = parse_public(base64.b64decode(str(doc["ak_public"])))
    attest, sig = base64.b64decode(str(doc["attest"])), base64.b64decode(str(doc["signature"]))
    verified = verify_quote(attest, sig, ak, bytes.fromhex(nonce), pcrs)
    assert verified.nonce == bytes.fromhex(nonce)
    assert dict(verified.pcrs[HashAlg.SHA256]) == pcrs[HashAlg.SHA256]
    assert verified.safe is True
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, ak, bytes(32), pcrs)
    assert err.value.code == "nonce_mismatch"
    tampered = {HashAlg.SHA256: {**pcrs[HashAlg.SHA256], 14: b"\x01" * 32}}
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, sig, ak, bytes.fromhex(nonce), tampered)
    assert err.value.code == "pcr_digest_mismatch"


def test_reboot_of_the_tpm_shows_as_reset_count_plus_one(node: swtpm.SwtpmNode) -> None:
    def counts(n: swtpm.SwtpmNode, ak: AkBlobs) -> tuple[int, int]:
        with Tpm(n.tcti) as tpm:
            q = tpm.quote(ak, b"r", SELECTION)
        v = verify_quote(q.attest, q.signature, parse_public(ak.public), b"r", q.pcrs)
        return v.reset_count, v.restart_count

    with Tpm(node.tcti) as tpm:
        ak = _ak(tpm)
    before = counts(node, ak)
    swtpm.stop(node)
    with swtpm.running(node) as rebooted:
        after = counts(rebooted, ak)
    assert after == (before[0] + 1, before[1])


@pytest.mark.parametrize("ak_alg", ["ecc", "rsa"])
def test_quote_verifies_independently_with_tpm2_checkquote(
    node: swtpm.SwtpmNode, tmp_path: Path, ak_alg: str
) -> None:
    """tpm2-tools reads the PCRs itself; they must equal the agent's and check the agent's quote.

    (tpm2_checkquote 5.4 mis-reads a plain "values" PCR file of 8 or more PCRs, so the PCRs
    are given in its "serialized" format, written by tpm2_pcrread from the same TPM.)
    """
    with Tpm(node.tcti) as tpm:
        ak = tpm.create_ak(tpm.resolve_ek_kind("auto"), ak_alg)
        nonce = os.urandom(20)
        quote = tpm.quote(ak, nonce, SELECTION)
    (tmp_path / "ak.pub").write_bytes(ak.public)  # TPM2B_PUBLIC: the "tss" format
    (tmp_path / "quote.msg").write_bytes(quote.attest[2:])  # TPMS_ATTEST without the size
    (tmp_path / "quote.sig").write_bytes(quote.signature)  # TPMT_SIGNATURE
    pcr_list = "sha256:0,1,2,3,4,5,6,7,8,9,14"

    def tool(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)

    for fmt, name in (("values", "values.pcrs"), ("serialized", "quote.pcrs")):
        read = tool("tpm2_pcrread", "-T", node.tcti, "-F", fmt, "-o", name, pcr_list)
        assert read.returncode == 0, read.stderr
    agents = b"".join(quote.pcrs[HashAlg.SHA256][i] for i in SELECTION[HashAlg.SHA256])
    assert (tmp_path / "values.pcrs").read_bytes() == agents

    def checkquote(qualification: str) -> subprocess.CompletedProcess[str]:
        return tool("tpm2_checkquote", "-u", "ak.pub", "-m", "quote.msg", "-s", "quote.sig",
                    "-f", "quote.pcrs", "-g", "sha256", "-q", qualification)  # fmt: skip

    ok = checkquote(nonce.hex())
    assert ok.returncode == 0, ok.stderr
    assert checkquote(bytes(20).hex()).returncode != 0
    with Tpm(node.tcti) as tpm:  # one more measurement: the quoted state is gone
        tpm.pcr_extend(9, {HashAlg.SHA256: bytes(32)})
    assert tool("tpm2_pcrread", "-T", node.tcti, "-F", "serialized", "-o", "quote.pcrs",
                pcr_list).returncode == 0  # fmt: skip
    assert checkquote(nonce.hex()).returncode != 0


def _ak(tpm: Tpm, kind: str = "rsa") -> AkBlobs:
    return tpm.create_ak(kind, "ecc")


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_activate_credential_accepts_pure_python_make_credential(
    node: swtpm.SwtpmNode, ek_kind: str
) -> None:
    secret = os.urandom(32)
    with Tpm(node.tcti) as tpm:
        ek = tpm.endorsement_key(ek_kind)
        ak = _ak(tpm, ek_kind)
        blob, encrypted = make_credential(parse_public(ek.public), ak.name, secret)
        assert tpm.activate_credential(ak, blob, encrypted) == secret
        assert _transient_and_sessions(tpm) == []


def test_activate_credential_refuses_a_blob_made_for_another_ek(
    node: swtpm.SwtpmNode, other_node: swtpm.SwtpmNode
) -> None:
    with Tpm(other_node.tcti) as other:
        other_ek = other.endorsement_key("rsa")
    with Tpm(node.tcti) as tpm:
        ak = _ak(tpm)
        blob, encrypted = make_credential(parse_public(other_ek.public), ak.name, os.urandom(32))
        with pytest.raises(TpmFailure, match="ActivateCredential"):
            tpm.activate_credential(ak, blob, encrypted)
        assert _transient_and_sessions(tpm) == []


def test_activate_credential_refuses_a_blob_for_another_ak_name(node: swtpm.SwtpmNode) -> None:
    with Tpm(node.tcti) as tpm:
        ek = tpm.endorsement_key("rsa")
        ak, other_ak = _ak(tpm), _ak(tpm)
        blob, encrypted = make_credential(parse_public(ek.public), other_ak.name, os.urandom(32))
        with pytest.raises(TpmFailure):
            tpm.activate_credential(ak, blob, encrypted)


def test_saved_ak_does_not_load_on_another_tpm(
    node: swtpm.SwtpmNode, other_node: swtpm.SwtpmNode
) -> None:
    with Tpm(node.tcti) as tpm:
        ak = _ak(tpm)
    with Tpm(other_node.tcti) as other, pytest.raises(TpmFailure, match="does not load"):
        other.quote(ak, b"n", SELECTION)


def test_pcr_read_returns_more_than_eight_pcrs_across_banks(node: swtpm.SwtpmNode) -> None:
    everything = {HashAlg.SHA1: tuple(range(24)), HashAlg.SHA256: tuple(range(24))}
    with Tpm(node.tcti) as tpm:
        tpm.pcr_extend(16, {HashAlg.SHA256: HashAlg.SHA256.hash(b"x")})
        counter, values = tpm.pcr_read(everything)
        assert _transient_and_sessions(tpm) == []
    assert counter > 0
    assert {a: sorted(v) for a, v in values.items()} == {a: list(range(24)) for a in everything}
    expected16 = HashAlg.SHA256.hash(bytes(32) + HashAlg.SHA256.hash(b"x"))
    assert values[HashAlg.SHA256][16] == expected16
    assert values[HashAlg.SHA1][16] == bytes(20)  # only the SHA-256 bank was extended
    assert values[HashAlg.SHA256][17] == b"\xff" * 32  # DRTM PCRs reset to ones


def test_no_transient_objects_or_sessions_are_left_after_quote(node: swtpm.SwtpmNode) -> None:
    with Tpm(node.tcti) as tpm:
        ak = _ak(tpm)
        for _ in range(5):
            tpm.quote(ak, os.urandom(32), SELECTION)
        assert _transient_and_sessions(tpm) == []


def test_tpm_info_reports_the_allocated_banks(node: swtpm.SwtpmNode) -> None:
    with Tpm(node.tcti) as tpm:
        info = tpm.info()
    assert info.manufacturer == "IBM"
    assert set(info.pcr_banks) == {HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512}
    assert info.pcr_banks[HashAlg.SHA256] == tuple(range(24))


def test_swtpm_stop_uses_the_pid_file_and_leaves_no_process(
    factory: dict[str, Path], tmp_path: Path
) -> None:
    node = swtpm.start(swtpm.clone(swtpm.SwtpmNode(factory["a"]), tmp_path / "n"))
    pid = node.pid()
    assert pid is not None and int(node.pid_file.read_text()) == pid
    assert swtpm.stop(node) is True
    assert node.pid() is None and not node.pid_file.exists()
    assert swtpm.stop(node) is False
