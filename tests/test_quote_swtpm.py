"""assay.tpm2 against a real (software) TPM: swtpm driven through tpm2-pytss, used as the oracle.

Our parsers must agree field by field with tpm2-pytss's own unmarshalling of what swtpm produced,
our Names with the TPM's, verify_quote must accept real quotes with PCR_Read values, and
ActivateCredential on the TPM must accept what make_credential produced (and nothing else).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

tpm2_pytss = pytest.importorskip("tpm2_pytss")  # installed by scripts/test; never skipped there
from tpm2_pytss import (  # noqa: E402
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_SYM_DEF,
    TSS2_Exception,
)
from tpm2_pytss.TCTILdr import TCTILdr  # noqa: E402
from tpm2_pytss.utils import NoSuchIndex, create_ek_template  # noqa: E402

from assay.algorithms import HashAlg  # noqa: E402
from assay.errors import VerificationFailed  # noqa: E402
from assay.tpm2 import (  # noqa: E402
    Alg,
    EccPoint,
    make_credential,
    parse_attest,
    parse_public,
    parse_signature,
    verify_quote,
)

pytestmark = pytest.mark.swtpm

# -- swtpm start/stop (the lead will consolidate this into conftest) ---------------------------


def _free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for swtpm")


@pytest.fixture(scope="module")
def swtpm_port() -> Iterator[int]:
    if shutil.which("swtpm") is None:
        pytest.fail("swtpm is not installed (scripts/test installs it)")
    state = tempfile.mkdtemp(prefix="assay-swtpm-")
    port = _free_port_pair()
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port}",
         "--ctrl", f"type=tcp,port={port + 1}", "--tpmstate", f"dir={state}",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"swtpm did not start: {err}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def esys(swtpm_port: int) -> Iterator[ESAPI]:
    tcti = TCTILdr("swtpm", f"host=127.0.0.1,port={swtpm_port}")
    ctx = ESAPI(tcti)
    try:
        yield ctx
    finally:
        ctx.close()
        tcti.close()


# -- keys ----------------------------------------------------------------------------------------

AK_ATTRS = (
    TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
)  # fmt: skip
PARENT_ATTRS = (
    TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
)  # fmt: skip
AK_KINDS = ["ecc256:ecdsa-sha256", "rsa2048:rsassa-sha256", "rsa2048:rsapss-sha256",
            "ecc256:ecdsa-sha384"]  # fmt: skip


@pytest.fixture(scope="module")
def parent(esys: ESAPI) -> Iterator[ESYS_TR]:
    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=PARENT_ATTRS)
    handle, _, _, _, _ = esys.create_primary(None, template, ESYS_TR.OWNER)
    yield handle
    esys.flush_context(handle)


AkBlobs = dict[str, tuple[Any, TPM2B_PUBLIC]]


@pytest.fixture(scope="module")
def aks(esys: ESAPI, parent: ESYS_TR) -> AkBlobs:
    """The AKs as (private, public) blobs: a TPM holds only ~3 loaded objects, so load on use."""
    blobs = {}
    for kind in AK_KINDS:
        template = TPM2B_PUBLIC.parse(kind, objectAttributes=AK_ATTRS)
        detail = template.publicArea.parameters
        if kind.startswith("ecc"):  # a signing key has no symmetric algorithm
            detail.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
        else:
            detail.rsaDetail.symmetric.algorithm = TPM2_ALG.NULL
        private, public, _, _, _ = esys.create(parent, None, template)
        blobs[kind] = (private, public)
    return blobs


@contextlib.contextmanager
def _loaded(esys: ESAPI, parent: ESYS_TR, aks: AkBlobs, kind: str) -> Iterator[ESYS_TR]:
    private, public = aks[kind]
    handle = esys.load(parent, private, public)
    try:
        yield handle
    finally:
        esys.flush_context(handle)


def _no_nv(index: Any) -> bytes:
    raise NoSuchIndex(index)


@contextlib.contextmanager
def _ek(esys: ESAPI, kind: str) -> Iterator[tuple[ESYS_TR, TPM2B_PUBLIC]]:
    """The TCG default EK (create_primary re-derives the same key from the endorsement seed)."""
    _, template = create_ek_template(kind, _no_nv)
    handle, public, _, _, _ = esys.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    try:
        yield handle, public
    finally:
        esys.flush_context(handle)


# -- PCRs and quotes -----------------------------------------------------------------------------

SELECTION = "sha256:0,1,2,3,4,5,6,7,16,23+sha1:0,7,16"
QUOTED = {HashAlg.SHA256: (0, 1, 2, 3, 4, 5, 6, 7, 16, 23), HashAlg.SHA1: (0, 7, 16)}


@pytest.fixture(scope="module")
def extended(esys: ESAPI) -> None:
    for pcr in (0, 7, 16, 23):
        esys.pcr_event(ESYS_TR.PCR0 + pcr, b"assay test pcr %d" % pcr)  # extends every bank


def _pcr_read(esys: ESAPI) -> dict[HashAlg, dict[int, bytes]]:
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank, pcrs in QUOTED.items():
        out[bank] = {}
        for pcr in pcrs:
            _, _, values = esys.pcr_read(f"{bank.bank}:{pcr}")
            out[bank][pcr] = bytes(values[0])
    return out


def _quote(esys: ESAPI, handle: ESYS_TR, nonce: bytes) -> tuple[bytes, bytes]:
    attest, sig = esys.quote(
        handle, TPML_PCR_SELECTION.parse(SELECTION), nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
    )
    return attest.marshal(), sig.marshal()


@pytest.mark.usefixtures("extended")
@pytest.mark.parametrize("kind", AK_KINDS)
def test_swtpm_quote_verifies_and_parses_like_tpm2_pytss(
    esys: ESAPI, parent: ESYS_TR, aks: AkBlobs, kind: str
) -> None:
    nonce = os.urandom(32)
    with _loaded(esys, parent, aks, kind) as handle:
        attest, signature = _quote(esys, handle, nonce)
    pcrs = _pcr_read(esys)
    ak = parse_public(aks[kind][1].marshal())
    quote = verify_quote(attest, signature, ak, nonce, pcrs)

    oracle, _ = TPMS_ATTEST.unmarshal(attest[2:])
    ours = parse_attest(attest)
    assert ours.magic == int(oracle.magic) and ours.type == int(oracle.type)
    assert ours.qualified_signer == bytes(oracle.qualifiedSigner)
    assert ours.extra_data == bytes(oracle.extraData) == nonce == quote.nonce
    ci = oracle.clockInfo
    assert ours.clock_info.clock == ci.clock == quote.clock
    assert ours.clock_info.reset_count == ci.resetCount == quote.reset_count
    assert ours.clock_info.restart_count == ci.restartCount == quote.restart_count
    assert ours.clock_info.safe == bool(ci.safe) == quote.safe
    assert ours.firmware_version == oracle.firmwareVersion == quote.firmware_version
    sel = oracle.attested.quote.pcrSelect
    oracle_banks = []
    for i in range(sel.count):
        s = sel.pcrSelections[i]
        bits = int.from_bytes(bytes(s.pcrSelect)[: s.sizeofSelect], "little")
        pcrs_set = tuple(p for p in range(s.sizeofSelect * 8) if bits >> p & 1)
        oracle_banks.append((int(s.hash), pcrs_set))
    assert ours.quote is not None
    assert [(int(b), p) for b, p in ours.quote.selection.banks] == oracle_banks
    assert dict(quote.selection.banks) == QUOTED
    assert ours.quote.pcr_digest == bytes(oracle.attested.quote.pcrDigest) == quote.pcr_digest
    assert {b: dict(v) for b, v in quote.pcrs.items()} == pcrs

    sig_oracle, _ = TPMT_SIGNATURE.unmarshal(signature)
    sig = parse_signature(signature)
    assert int(sig.scheme) == int(sig_oracle.sigAlg)
    assert sig.hash_alg == ak.scheme.hash_alg == quote.hash_alg
    if sig.scheme == Alg.ECDSA:
        assert int(sig.hash_alg) == int(sig_oracle.signature.ecdsa.hash)
        assert sig.r == bytes(sig_oracle.signature.ecdsa.signatureR)
        assert sig.s == bytes(sig_oracle.signature.ecdsa.signatureS)
    else:
        sigs = sig_oracle.signature
        detail = sigs.rsassa if sig.scheme == Alg.RSASSA else sigs.rsapss
        assert int(sig.hash_alg) == int(detail.hash)
        assert sig.sig == bytes(detail.sig)


@pytest.mark.usefixtures("extended")
def test_swtpm_quote_with_a_changed_pcr_nonce_or_ak_fails(
    esys: ESAPI, parent: ESYS_TR, aks: AkBlobs
) -> None:
    nonce = os.urandom(32)
    with _loaded(esys, parent, aks, "ecc256:ecdsa-sha256") as handle:
        attest, signature = _quote(esys, handle, nonce)
    ak = parse_public(aks["ecc256:ecdsa-sha256"][1].marshal())
    pcrs = _pcr_read(esys)
    pcrs[HashAlg.SHA256][16] = hashlib.sha256(b"other").digest()
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, signature, ak, nonce, pcrs)
    assert err.value.code == "pcr_digest_mismatch"
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, signature, ak, os.urandom(32), _pcr_read(esys))
    assert err.value.code == "nonce_mismatch"
    other = parse_public(aks["ecc256:ecdsa-sha384"][1].marshal())
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, signature, other, nonce, _pcr_read(esys))
    assert err.value.code == "scheme_mismatch"
    rsa_ak = parse_public(aks["rsa2048:rsassa-sha256"][1].marshal())
    with pytest.raises(VerificationFailed) as err:
        verify_quote(attest, signature, rsa_ak, nonce, _pcr_read(esys))
    assert err.value.code == "unsupported_scheme"


@pytest.mark.parametrize("kind", AK_KINDS)
def test_swtpm_public_areas_parse_like_tpm2_pytss_and_names_match(
    esys: ESAPI, parent: ESYS_TR, aks: AkBlobs, kind: str
) -> None:
    public = aks[kind][1]
    ours = parse_public(public.marshal())
    with _loaded(esys, parent, aks, kind) as handle:
        tpm_name = bytes(esys.tr_get_name(handle))
    assert parse_public(public.publicArea.marshal()) == ours  # TPMT form, detected
    area = public.publicArea
    assert int(ours.type) == int(area.type) and int(ours.name_alg) == int(area.nameAlg)
    assert int(ours.object_attributes) == int(area.objectAttributes)
    assert ours.auth_policy == bytes(area.authPolicy)
    assert ours.name == bytes(public.get_name()) == tpm_name
    if ours.type == Alg.ECC:
        detail = area.parameters.eccDetail
        assert isinstance(ours.unique, EccPoint)
        assert ours.unique.x == bytes(area.unique.ecc.x)
        assert ours.unique.y == bytes(area.unique.ecc.y)
        assert int(ours.parameters.curve) == int(detail.curveID)  # type: ignore[union-attr]
    else:
        detail = area.parameters.rsaDetail
        assert ours.unique == bytes(area.unique.rsa)
        assert ours.parameters.key_bits == detail.keyBits  # type: ignore[union-attr]
    assert int(ours.scheme.scheme) == int(detail.scheme.scheme)
    assert ours.scheme.hash_alg is not None
    assert int(ours.scheme.hash_alg) == int(detail.scheme.details.anySig.hashAlg)


# -- MakeCredential / ActivateCredential -------------------------------------------------------


def _activate(esys: ESAPI, ak: ESYS_TR, ek: ESYS_TR, blob: bytes, secret: bytes) -> bytes:
    id_object, _ = TPM2B_ID_OBJECT.unmarshal(blob)
    encrypted, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(secret)
    session = esys.start_auth_session(
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )
    try:
        esys.policy_secret(ESYS_TR.ENDORSEMENT, session)
        return bytes(esys.activate_credential(ak, ek, id_object, encrypted, session2=session))
    finally:
        with contextlib.suppress(TSS2_Exception):
            esys.flush_context(session)


@pytest.mark.parametrize("ek_kind", ["EK-RSA2048", "EK-ECC256"])
def test_swtpm_activates_our_credential(
    esys: ESAPI, parent: ESYS_TR, aks: AkBlobs, ek_kind: str
) -> None:
    ak_name = parse_public(aks["ecc256:ecdsa-sha256"][1].marshal()).name
    with _ek(esys, ek_kind) as (ek_handle, ek_public):
        ek = parse_public(ek_public.marshal())
        assert ek.type == (Alg.RSA if ek_kind == "EK-RSA2048" else Alg.ECC)
        assert ek.name == bytes(ek_public.get_name())
        with _loaded(esys, parent, aks, "ecc256:ecdsa-sha256") as ak_handle:
            for secret in (os.urandom(32), b"\x01", os.urandom(16)):
                blob, encrypted = make_credential(ek, ak_name, secret)
                assert _activate(esys, ak_handle, ek_handle, blob, encrypted) == secret


def test_swtpm_refuses_a_credential_for_another_ek_or_another_object(
    esys: ESAPI, parent: ESYS_TR, aks: AkBlobs
) -> None:
    ak_name = parse_public(aks["ecc256:ecdsa-sha256"][1].marshal()).name
    other_name = parse_public(aks["rsa2048:rsassa-sha256"][1].marshal()).name
    secret = os.urandom(32)
    with _ek(esys, "EK-ECC256") as (_, ecc_public):
        ecc_ek = parse_public(ecc_public.marshal())
    with _ek(esys, "EK-RSA2048") as (rsa_handle, rsa_public):
        rsa_ek = parse_public(rsa_public.marshal())
        with _loaded(esys, parent, aks, "ecc256:ecdsa-sha256") as ak_handle:
            # sanity: the right EK and Name activate
            blob, encrypted = make_credential(rsa_ek, ak_name, secret)
            assert _activate(esys, ak_handle, rsa_handle, blob, encrypted) == secret
            # made for the ECC EK, presented to the RSA EK
            blob, encrypted = make_credential(ecc_ek, ak_name, secret)
            with pytest.raises(TSS2_Exception):
                _activate(esys, ak_handle, rsa_handle, blob, encrypted)
            # made for another object's Name: the TPM's integrity check fails
            blob, encrypted = make_credential(rsa_ek, other_name, secret)
            with pytest.raises(TSS2_Exception):
                _activate(esys, ak_handle, rsa_handle, blob, encrypted)
