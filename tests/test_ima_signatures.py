"""IMA signatures made by real tools: evmctl v2, v3 over the ima_file_id hash (openssl), appended
module signatures (scripts/sign-file, openssl cms), and the named negative vectors beside them
(tests/vectors/ima/sig/, made by make-signature-vectors.sh; SOURCES.md says how)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import (
    ImaKey,
    ImaReplay,
    ModSig,
    ReviewedImaLog,
    assume_quoted_for_review,
    file_id_hash,
    load_key,
    parse_ima_log,
    parse_module_signature,
    parse_signature,
    verify_modsig,
    verify_signature,
)
from golden.model import digests
from golden.runtime import RuntimePolicy, SigningKey, freeze
from verifier.appraisal.runtime import appraise_runtime

from . import imalogbuilder as b

SIG = Path(__file__).parent / "vectors" / "ima" / "sig"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CONTENT = (SIG / "file.bin").read_bytes()
MODULE = (SIG / "module.ko").read_bytes()
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _key(name: str, keyid: int | None = None) -> ImaKey:
    return load_key((SIG / f"{name}.crt.pem").read_bytes(), name, keyid)


def _sig(name: str) -> bytes:
    return (SIG / name).read_bytes()


KEYS = tuple(_key(k) for k in ("rsa", "ec", "other"))


def _verify(name: str, keys: tuple[ImaKey, ...], alg: str = "sha256") -> tuple[str, str]:
    sig = parse_signature(_sig(name), where=name, offset=0)
    return verify_signature(sig, alg, hashlib.new(alg, CONTENT).digest(), keys)


@pytest.mark.parametrize(
    ("vector", "key", "alg"),
    [
        ("evmctl-v2-sha256-rsa.sig", "rsa", "sha256"),
        ("evmctl-v2-sha512-rsa.sig", "rsa", "sha512"),
        ("evmctl-v2-sha256-ec.sig", "ec", "sha256"),
        ("openssl-v3-sha256-rsa.sig", "rsa", "sha256"),
        ("openssl-v3-sha256-ec.sig", "ec", "sha256"),
    ],
)
def test_real_tool_signatures_verify_with_their_key(vector: str, key: str, alg: str) -> None:
    outcome, why = _verify(vector, (_key("other"), _key(key)), alg)
    assert outcome == "valid", why
    version = _sig(vector)[1]
    assert why.startswith(f"v{version} signature by {key} (key id ")


def test_evmctl_key_id_is_the_certificate_skid_suffix() -> None:
    sig = parse_signature(_sig("evmctl-v2-sha256-rsa.sig"), where="x", offset=0)
    assert sig.keyid == _key("rsa").keyid and sig.version == 2 and sig.hash_algo == "sha256"


def test_v3_signs_the_hash_of_the_ima_file_id_the_shell_computed() -> None:
    """The vector script hashed printf '\\003\\004' + sha256(file): the same bytes."""
    want = hashlib.sha256(b"\x03\x04" + hashlib.sha256(CONTENT).digest()).digest()
    assert file_id_hash(3, "sha256", hashlib.sha256(CONTENT).digest()) == want
    assert file_id_hash(3, "md5", bytes(16)) is None


@pytest.mark.parametrize(
    ("vector", "outcome", "says"),
    [
        ("neg-v3-as-v2.sig", "invalid", "v2 signature by key id 6d9c3029 does not verify"),
        ("neg-v2-as-v3.sig", "invalid", "v3 signature by key id 6d9c3029 does not verify"),
        ("neg-algo-sha512-header.sig", "invalid", "over a sha512 digest, the file's is sha256"),
        ("neg-flipped-byte.sig", "invalid", "does not verify"),
    ],
)
def test_negative_signature_vectors_fail(vector: str, outcome: str, says: str) -> None:
    got, why = _verify(vector, (_key("rsa"),))
    assert got == outcome and says in why


def test_truncated_signature_is_malformed_at_its_size_field() -> None:
    with pytest.raises(
        MalformedEvidence, match="header says 256 signature bytes, the field holds 91"
    ):
        parse_signature(_sig("neg-truncated.sig"), where="IMA entry 1", offset=100)


def test_flipped_file_digest_fails_every_version() -> None:
    flipped = bytearray(hashlib.sha256(CONTENT).digest())
    flipped[0] ^= 1
    for vector in ("evmctl-v2-sha256-rsa.sig", "openssl-v3-sha256-rsa.sig"):
        sig = parse_signature(_sig(vector), where="x", offset=0)
        assert verify_signature(sig, "sha256", bytes(flipped), (_key("rsa"),))[0] == "invalid"


def test_wrong_key_with_the_signers_key_id_does_not_verify() -> None:
    impostor = _key("other", keyid=_key("rsa").keyid)
    for vector in ("evmctl-v2-sha256-rsa.sig", "openssl-v3-sha256-rsa.sig"):
        assert _verify(vector, (impostor,))[0] == "invalid"


def test_an_untrusted_signer_is_an_unknown_key() -> None:
    outcome, why = _verify("openssl-v3-sha256-rsa.sig", (_key("other"), _key("ec")))
    assert outcome == "unknown_key" and "6d9c3029" in why


def test_evm_portable_signature_is_unsupported() -> None:
    raw = bytearray(_sig("evmctl-v2-sha256-rsa.sig"))
    raw[0] = 5
    sig = parse_signature(bytes(raw), where="x", offset=0)
    got = verify_signature(sig, "sha256", hashlib.sha256(CONTENT).digest(), (_key("rsa"),))
    assert got[0] == "unsupported"


# --- appended signatures ----------------------------------------------------------------------


def _modsig(vector: str) -> ModSig:
    if vector.endswith(".ko"):
        content, pkcs7 = b.split_module(_sig(vector))
        assert content == MODULE
    else:
        pkcs7 = _sig(vector)
    alg = parse_module_signature(pkcs7).digest_alg
    return ModSig(alg, hashlib.new(alg, MODULE).digest(), pkcs7)


@pytest.mark.parametrize(
    ("vector", "key", "signer"),
    [
        ("sign-file-sha256-rsa.ko", "rsa", "serial "),
        ("sign-file-keyid-sha256-rsa.ko", "rsa", "subject key id "),
        ("sign-file-sha384-ec.ko", "ec", "serial "),
        ("openssl-cms-noattr-sha256-rsa.p7", "rsa", "serial "),
    ],
)
def test_appended_signatures_verify_over_d_modsig(vector: str, key: str, signer: str) -> None:
    outcome, why = verify_modsig(_modsig(vector), (_key("other"), _key(key)))
    assert outcome == "valid", why
    assert why.startswith(f"appended signature by {key} ({signer}")


def test_appended_signature_with_signed_attributes_is_refused() -> None:
    got = verify_modsig(_modsig("openssl-cms-signedattrs-sha256-rsa.p7"), (_key("rsa"),))
    assert got[0] == "unsupported" and "signed attributes" in got[1]


def test_appended_signature_by_an_untrusted_or_bare_key_is_unknown() -> None:
    pem = _key("rsa").key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    bare = load_key(pem, "bare")
    for keys in ((_key("other"),), (bare,)):
        assert verify_modsig(_modsig("sign-file-sha256-rsa.ko"), keys)[0] == "unknown_key"


def test_appended_signature_over_another_digest_fails() -> None:
    m = _modsig("sign-file-sha256-rsa.ko")
    flipped = bytes([m.digest[0] ^ 1]) + m.digest[1:]
    assert verify_modsig(m._replace(digest=flipped), (_key("rsa"),))[0] == "invalid"
    assert verify_modsig(m._replace(digest_alg="sha384"), (_key("rsa"),))[0] == "invalid"


def test_appended_signature_with_a_key_of_the_other_type_does_not_match() -> None:
    ec_as_rsa = _key("ec")
    m = _modsig("sign-file-sha256-rsa.ko")
    ident = _key("rsa")
    impostor = ImaKey(
        "impostor", ident.keyid, ec_as_rsa.key, ident.issuer, ident.serial, ident.skid
    )
    assert verify_modsig(m, (impostor,))[0] == "unknown_key"


@pytest.mark.parametrize(
    ("name", "mutate", "says"),
    [
        ("truncated", lambda p: p[:-10], "runs past its container"),
        ("trailing_byte", lambda p: p + b"\0", "after the last field"),
        ("indefinite_length", lambda p: p[:1] + b"\x80" + p[4:], "length form 0x80"),
        ("embedded_content", None, "embedded"),
        (
            "not_signed_data",
            lambda p: p.replace(
                bytes.fromhex("2a864886f70d010702"), bytes.fromhex("2a864886f70d010703"), 1
            ),
            "not signedData",
        ),
        ("two_signers", None, "more than one SignerInfo"),
    ],
)
def test_hostile_pkcs7_is_named(name: str, mutate: object, says: str) -> None:
    _, pkcs7 = b.split_module(_sig("sign-file-sha256-rsa.ko"))
    if name == "embedded_content":
        bad = _rewrap_signed_data(pkcs7, embed=True)
    elif name == "two_signers":
        bad = _rewrap_signed_data(pkcs7, twice=True)
    else:
        assert callable(mutate)
        bad = mutate(pkcs7)
    with pytest.raises(MalformedEvidence, match=says):
        parse_module_signature(bad)
    got = verify_modsig(ModSig("sha256", hashlib.sha256(MODULE).digest(), bad), (_key("rsa"),))
    assert got[0] == "invalid"


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def _children(der: bytes) -> list[bytes]:
    """The TLVs inside one constructed value (a test-side reader, lengths as sign-file writes)."""
    body, out = der[2 + (der[1] & 0x7F if der[1] & 0x80 else 0) :], []
    while body:
        hl = 2 + (body[1] & 0x7F if body[1] & 0x80 else 0)
        n = int.from_bytes(body[2:hl], "big") if body[1] & 0x80 else body[1]
        out.append(body[: hl + n])
        body = body[hl + n :]
    return out


def _rewrap_signed_data(pkcs7: bytes, *, embed: bool = False, twice: bool = False) -> bytes:
    oid, wrapper = _children(pkcs7)
    (sd,) = _children(wrapper)
    version, algs, encap, signers = _children(sd)
    if embed:
        encap = _tlv(0x30, b"".join(_children(encap)) + _tlv(0xA0, _tlv(0x04, MODULE)))
    if twice:
        signers = _tlv(0x31, b"".join(_children(signers)) * 2)
    sd = _tlv(0x30, version + algs + encap + signers)
    return _tlv(0x30, oid + _tlv(0xA0, sd))


# --- in the appraisal ---------------------------------------------------------------------------


def _policy(require: str, keys: tuple[ImaKey, ...], **kw: object) -> RuntimePolicy:
    return RuntimePolicy(
        "sig",
        "1",
        keys=tuple(SigningKey("", k) for k in keys),
        require_signatures=(require,),
        require_boot_aggregate=False,
        **kw,  # type: ignore[arg-type]
    )


def _evidence(*made: b.Made) -> ReviewedImaLog:
    return assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(b.binary(made)))


def test_required_v3_signature_in_an_ima_sig_entry_passes_and_a_relabelled_one_fails() -> None:
    good = b.file_entry(
        b"/usr/bin/signed", CONTENT, template="ima-sig", sig=_sig("openssl-v3-sha256-rsa.sig")
    )
    bad = b.file_entry(
        b"/usr/bin/relabel", CONTENT, template="ima-sig", sig=_sig("neg-v3-as-v2.sig")
    )
    files = {
        n: (digests({HashAlg.SHA256: hashlib.sha256(CONTENT).digest()}),)
        for n in ("/usr/bin/signed", "/usr/bin/relabel")
    }
    checks = appraise_runtime(
        _evidence(good, bad), [_policy("/usr/bin/*", (_key("rsa"),), files=freeze(files))], NOW
    )
    (fail,) = [c for c in checks if c.reason == "ima_signature_invalid"]
    assert "/usr/bin/relabel" in fail.message and "v2 signature by key id 6d9c3029" in fail.message


def test_a_module_with_a_valid_appended_signature_is_approved_by_approve_signed() -> None:
    content, pkcs7 = b.split_module(_sig("sign-file-sha256-rsa.ko"))
    entry = b.modsig_entry(
        b"/lib/modules/x.ko", content, pkcs7, whole=_sig("sign-file-sha256-rsa.ko")
    )
    ok = appraise_runtime(
        _evidence(entry), [_policy("/lib/modules/*", (_key("rsa"),), approve_signed=True)], NOW
    )
    assert [c.reason for c in ok] == ["ima_entries_approved"]
    untrusted = appraise_runtime(
        _evidence(entry), [_policy("/lib/modules/*", (_key("other"),), approve_signed=True)], NOW
    )
    assert [c.reason for c in untrusted] == ["ima_signature_invalid", "ima_entries_not_approved"]
    assert "which the policy does not trust" in untrusted[0].message


@pytest.mark.skipif(
    subprocess.run(["which", "evmctl"], capture_output=True).returncode != 0,
    reason="evmctl (ima-evm-utils) not installed: the vectors are checked as committed",
)
def test_evmctl_agrees_the_v2_vector_verifies(tmp_path: Path) -> None:
    """An independent check where evmctl is at hand: its own ima_verify over the committed file
    (evmctl 1.4 reads a v2 key as a DER certificate)."""
    (tmp_path / "file.bin").write_bytes(CONTENT)
    (tmp_path / "file.bin.sig").write_bytes(_sig("evmctl-v2-sha256-rsa.sig"))
    got = subprocess.run(
        [
            "evmctl",
            "ima_verify",
            "--sigfile",
            "--key",
            str(SIG / "rsa.crt.der"),
            str(tmp_path / "file.bin"),
        ],
        capture_output=True,
        text=True,
    )
    assert got.returncode == 0, got.stderr


# --- property: whatever the bytes, a parse or MalformedEvidence, and never "valid" --------------

_PKCS7_SEEDS = [
    b.split_module(_sig("sign-file-sha256-rsa.ko"))[1],
    b.split_module(_sig("sign-file-keyid-sha256-rsa.ko"))[1],
    _sig("openssl-cms-signedattrs-sha256-rsa.p7"),
]


@FUZZ
@given(
    seed=st.sampled_from(_PKCS7_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_pkcs7_parses_strictly_and_never_verifies(
    seed: bytes, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(seed)
    for at, value in edits:
        data[at % len(data)] = value
    assume(bytes(data) != seed)
    try:
        sig = parse_module_signature(bytes(data))
    except MalformedEvidence as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(data)
    else:
        assert sig.skid is not None or sig.serial is not None
    got = verify_modsig(ModSig("sha256", hashlib.sha256(MODULE).digest(), bytes(data)), KEYS)
    # A flipped byte may land in uncovered framing (a length's form is checked, a NULL's content
    # is not there to flip): only the signature bytes and what they sign decide "valid".
    if got[0] == "valid":
        assert _signature_bytes(bytes(data)) == _signature_bytes(seed)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_are_a_module_signature_or_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        parse_module_signature(data)


def _signature_bytes(pkcs7: bytes) -> bytes | None:
    try:
        return parse_module_signature(pkcs7).signature
    except MalformedEvidence:
        return None
