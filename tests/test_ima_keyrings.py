"""Keys the IMA list loads onto kernel keyrings (ima-buf, KEY_CHECK): they verify later signatures
only when a policy trusts the keyring (and, if it names CAs, the key's issuer), and only after the
load. Certificates and signatures are the evmctl/openssl vectors of tests/vectors/ima/sig/."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import (
    ImaReplay,
    ImaReplayError,
    KeyringLoads,
    ReviewedImaLog,
    assume_quoted_for_review,
    parse_ima_log,
    replay_from,
)
from golden.model import digests
from golden.runtime import KeyringCa, RuntimePolicy, freeze
from golden.runtime_yaml import dump_runtime_yaml, load_runtime_yaml
from golden.yamlfmt import GoldenFormatError
from verifier.appraisal.runtime import appraise_runtime

from . import imalogbuilder as b

VECTORS = Path(__file__).parent / "vectors" / "ima"
SIG = VECTORS / "sig"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CONTENT = (SIG / "file.bin").read_bytes()
LEAF_DER = (SIG / "leaf.crt.der").read_bytes()  # issued by ca.crt.pem
SELF_SIGNED_DER = (SIG / "rsa.crt.der").read_bytes()
CA_PEM = (SIG / "ca.crt.pem").read_text()
FILES = freeze(
    {
        f"/usr/bin/{n}": (digests({HashAlg.SHA256: hashlib.sha256(CONTENT).digest()}),)
        for n in ("signed", "early", "other")
    }
)


def _signed(name: str, vector: str = "evmctl-v2-sha256-leaf.sig") -> b.Made:
    sig = (SIG / vector).read_bytes()
    return b.file_entry(f"/usr/bin/{name}".encode(), CONTENT, template="ima-sig", sig=sig)


def _policy(**kw: Any) -> RuntimePolicy:
    kw.setdefault("trusted_keyrings", (".ima",))
    kw.setdefault("files", FILES)
    return RuntimePolicy(
        "keys", "1", require_signatures=("/usr/bin/*",), require_boot_aggregate=False, **kw
    )


def _ca() -> KeyringCa:
    return KeyringCa("fleet-ca", CA_PEM, x509.load_pem_x509_certificate(CA_PEM.encode()))


def _evidence(*made: b.Made) -> ReviewedImaLog:
    return assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(b.binary(made)))


def _failing(checks: list[Any]) -> list[tuple[int | None, str]]:
    return [(c.event, c.reason) for c in checks if c.status == "fail" and c.event is not None]


def test_a_key_loaded_onto_a_trusted_keyring_verifies_the_files_signed_after_it() -> None:
    ev = _evidence(b.buf_entry(b".ima", LEAF_DER), _signed("signed"))
    checks = appraise_runtime(ev, [_policy()], NOW)
    assert [c.reason for c in checks] == ["ima_entries_approved"]
    assert "2 of 2 IMA entries approved" in checks[0].message


def test_a_key_loaded_after_a_file_does_not_verify_it_retroactively() -> None:
    ev = _evidence(_signed("early"), b.buf_entry(b".ima", LEAF_DER), _signed("signed"))
    checks = appraise_runtime(ev, [_policy()], NOW)
    assert _failing(checks) == [(0, "ima_signature_invalid")]
    assert "/usr/bin/early" in checks[0].message and "does not trust" in checks[0].message


def test_a_key_loaded_onto_an_untrusted_keyring_never_counts() -> None:
    ev = _evidence(b.buf_entry(b".platform", LEAF_DER), _signed("signed"))
    checks = appraise_runtime(ev, [_policy()], NOW)
    assert _failing(checks) == [(0, "ima_buffer_not_approved"), (1, "ima_signature_invalid")]


def test_approving_the_untrusted_load_as_a_buffer_still_does_not_trust_its_key() -> None:
    load = b.buf_entry(b".platform", LEAF_DER)
    approved = freeze(
        {".platform": (digests({HashAlg.SHA256: hashlib.sha256(LEAF_DER).digest()}),)}
    )
    checks = appraise_runtime(_evidence(load, _signed("signed")), [_policy(buffers=approved)], NOW)
    assert _failing(checks) == [(1, "ima_signature_invalid")]


def test_with_keyring_cas_only_a_key_the_ca_issued_counts() -> None:
    policy = _policy(keyring_cas=(_ca(),))
    good = _evidence(b.buf_entry(b".ima", LEAF_DER), _signed("signed"))
    assert _failing(appraise_runtime(good, [policy], NOW)) == []
    rogue = _evidence(
        b.buf_entry(b".ima", SELF_SIGNED_DER), _signed("signed", "evmctl-v2-sha256-rsa.sig")
    )
    checks = appraise_runtime(rogue, [policy], NOW)
    assert _failing(checks) == [(0, "ima_keyring_key_untrusted"), (1, "ima_signature_invalid")]
    assert "CN=assay test IMA RSA key is not issued by fleet-ca" in checks[0].message


def test_keylimes_real_keyring_entry_loads_and_is_refused_by_another_ca() -> None:
    log = parse_ima_log((VECTORS / "keylime-ima-keyring.ascii").read_bytes())
    ev = assume_quoted_for_review(ImaReplay.initial(), log)
    assert _failing(appraise_runtime(ev, [_policy()], NOW)) == []
    checks = appraise_runtime(ev, [_policy(keyring_cas=(_ca(),))], NOW)
    assert _failing(checks) == [(0, "ima_keyring_key_untrusted")]
    assert "CN=ecdsa-ca-signed-ec-key" in checks[0].message


def test_a_load_that_is_not_a_certificate_fails_and_loads_nothing() -> None:
    ev = _evidence(b.buf_entry(b".ima", b"not DER"), _signed("signed"))
    checks = appraise_runtime(ev, [_policy()], NOW)
    assert _failing(checks) == [(0, "ima_keyring_key_untrusted"), (1, "ima_signature_invalid")]
    assert "not an X.509 certificate" in checks[0].message


def test_a_loaded_key_approves_unlisted_files_only_with_approve_signed() -> None:
    ev = _evidence(b.buf_entry(b".ima", LEAF_DER), _signed("unlisted"))
    strict = _failing(appraise_runtime(ev, [_policy()], NOW))
    assert strict == [(1, "ima_file_not_approved")]
    assert _failing(appraise_runtime(ev, [_policy(approve_signed=True)], NOW)) == []


def test_a_later_chunk_uses_the_keys_loaded_in_earlier_ones() -> None:
    made = [b.buf_entry(b".ima", LEAF_DER), _signed("signed")]
    log = parse_ima_log(b.binary(made))
    first, rest = log.entries[:1], log.entries[1:]
    ev1 = assume_quoted_for_review(ImaReplay.initial(), first)
    loads = KeyringLoads().extend(ev1)
    ev2 = assume_quoted_for_review(ev1.state, rest)
    assert _failing(appraise_runtime(ev2, [_policy()], NOW, keyring=loads)) == []
    without = appraise_runtime(ev2, [_policy()], NOW)
    assert _failing(without) == [(1, "ima_signature_invalid")]
    assert "keys the list loaded before this chunk were not given" in without[0].message
    with pytest.raises(ImaReplayError, match="go through entry 0"):
        appraise_runtime(ev2, [_policy()], NOW, keyring=KeyringLoads())


def test_keyring_loads_survive_json_and_refuse_a_gap() -> None:
    log = parse_ima_log(b.binary([b.buf_entry(b".ima", LEAF_DER), _signed("signed")]))
    ev = assume_quoted_for_review(ImaReplay.initial(), log)
    loads = KeyringLoads().extend(ev)
    assert loads.entries == 2 and [(k.index, k.keyring) for k in loads.loads] == [(0, b".ima")]
    assert KeyringLoads.from_json(loads.to_json()) == loads
    later = assume_quoted_for_review(ev.state, ())
    assert KeyringLoads().extend(later) == KeyringLoads()
    gap = assume_quoted_for_review(
        replay_from(ImaReplay.initial(), log.entries[:1]), log.entries[1:]
    )
    with pytest.raises(ImaReplayError):
        KeyringLoads().extend(gap)
    with pytest.raises(ValueError, match="an index outside"):
        KeyringLoads.from_json({"entries": 0, "loads": [[0, "2e", "00"]]})


def test_yaml_trusted_keyrings_and_cas_round_trip_and_are_checked() -> None:
    policy = _policy(keyring_cas=(_ca(),), files=freeze({}))
    text = dump_runtime_yaml(policy)
    assert "trusted_keyrings:\n  - .ima" in text
    again = load_runtime_yaml(text)
    assert again.trusted_keyrings == (".ima",) and again.keyring_cas[0].label == "fleet-ca"
    assert again.keyring_cas[0].cert == _ca().cert
    for bad in ("user-keys", "_ima"):
        with pytest.raises(GoldenFormatError, match="not a name only the kernel can give"):
            load_runtime_yaml(text.replace("  - .ima", f"  - {bad}"))
    no_rings = "kind: runtime-policy\nname: x\nversion: '1'\nsignatures:\n  keyring_cas: []\n"
    assert load_runtime_yaml(no_rings).keyring_cas == ()
    with pytest.raises(GoldenFormatError, match="not a PEM certificate"):
        load_runtime_yaml(
            "kind: runtime-policy\nname: x\nversion: '1'\nsignatures:\n"
            "  trusted_keyrings: [.ima]\n  keyring_cas: [{label: a, pem: nope}]\n"
        )


def test_keyring_loads_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import assay.ima._keyring as keyring

    monkeypatch.setattr(keyring, "MAX_KEY_LOADS", 1)
    made = [b.buf_entry(b".ima", LEAF_DER), b.buf_entry(b".ima", SELF_SIGNED_DER)]
    ev = assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(b.binary(made)))
    with pytest.raises(MalformedEvidence, match="loads more than 1 keys"):
        KeyringLoads().extend(ev)


def test_an_underscore_keyring_is_never_a_key_load() -> None:
    """User space can create a keyring named _ima: its entries are ordinary buffers."""
    ev = _evidence(b.buf_entry(b"_ima", LEAF_DER), _signed("signed"))
    assert KeyringLoads().extend(ev).loads == ()
    checks = appraise_runtime(ev, [_policy()], NOW)
    assert _failing(checks) == [(0, "ima_buffer_not_approved"), (1, "ima_signature_invalid")]


def test_a_certificate_of_an_unknown_version_is_an_untrusted_load_not_a_crash() -> None:
    bad = LEAF_DER.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1)
    assert bad != LEAF_DER
    checks = appraise_runtime(
        _evidence(b.buf_entry(b".ima", bad), _signed("signed")), [_policy()], NOW
    )
    assert _failing(checks) == [(0, "ima_keyring_key_untrusted"), (1, "ima_signature_invalid")]
    assert "not an X.509 certificate" in checks[0].message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(LEAF_DER) - 1), st.integers(0, 255)), min_size=1, max_size=3
    )
)
def test_a_mutated_certificate_never_loads_a_key_the_ca_vouches_for(
    edits: list[tuple[int, int]],
) -> None:
    data = bytearray(LEAF_DER)
    for at, value in edits:
        data[at] = value
    assume(bytes(data) != LEAF_DER)
    ev = _evidence(b.buf_entry(b".ima", bytes(data)), _signed("signed"))
    checks = appraise_runtime(ev, [_policy(keyring_cas=(_ca(),))], NOW)
    failing = _failing(checks)
    assert (0, "ima_keyring_key_untrusted") in failing or failing == []
    if failing == []:  # only a change the CA's signature does not cover (none in practice)
        x509.load_der_x509_certificate(bytes(data)).verify_directly_issued_by(_ca().cert)


def test_the_kernels_builtin_key_log_verifies_appended_module_signatures() -> None:
    """With .builtin_trusted_keys trusted, the module-signing certificate the kernel logs verifies
    sign-file's appended signatures (matched by issuer and serial, as the PKCS#7 names it)."""
    signed = (SIG / "sign-file-sha256-rsa.ko").read_bytes()
    content, pkcs7 = b.split_module(signed)
    module = b.modsig_entry(b"/lib/modules/x.ko", content, pkcs7, whole=signed)
    policy = RuntimePolicy(
        "modules",
        "1",
        trusted_keyrings=(".builtin_trusted_keys",),
        require_signatures=("/lib/modules/*",),
        approve_signed=True,
        require_boot_aggregate=False,
    )
    ev = _evidence(b.buf_entry(b".builtin_trusted_keys", SELF_SIGNED_DER), module)
    assert _failing(appraise_runtime(ev, [policy], NOW)) == []
    before = _evidence(module, b.buf_entry(b".builtin_trusted_keys", SELF_SIGNED_DER))
    assert _failing(appraise_runtime(before, [policy], NOW)) == [(0, "ima_signature_invalid")]
