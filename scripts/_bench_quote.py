"""Quote verification benchmark: ``verify_quote`` against the bare ``cryptography`` signature check.

Quotes are TPMS_ATTEST structures marshalled here and signed with ``cryptography`` keys (a TPM's
signature is the same operation), over the SHA-256 PCRs the verifier service asks for by default
(0-9 and 14; ``PCRS=24`` in the environment selects all 24 instead).
``bench_quote()`` returns median microseconds; ``scripts/bench`` calls it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from assay.algorithms import HashAlg
from assay.tpm2 import (
    Alg,
    ClockInfo,
    ObjectAttributes,
    Scheme,
    Signature,
    marshal_quote_attest,
    marshal_signature,
    public_from_key,
    verify_quote,
)

RUNS = 2000
AK_ATTRIBUTES = ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED


def _paired_median_us(
    full: Callable[[], object], bare: Callable[[], object], runs: int
) -> tuple[float, float]:
    """Median µs of each, timed alternately so that both see the same machine load."""
    for _ in range(min(200, runs)):
        full()
        bare()
    full_ns, bare_ns = [], []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        full()
        t1 = clock()
        bare()
        t2 = clock()
        full_ns.append(t1 - t0)
        bare_ns.append(t2 - t1)
    return (
        round(statistics.median(full_ns) / 1000, 2),
        round(statistics.median(bare_ns) / 1000, 2),
    )


SELECTED = tuple(range(24)) if os.environ.get("PCRS") == "24" else (*range(10), 14)


def _pcrs() -> dict[HashAlg, dict[int, bytes]]:
    return {HashAlg.SHA256: {i: os.urandom(32) for i in SELECTED}}


def _attest(pcrs: dict[HashAlg, dict[int, bytes]], nonce: bytes) -> bytes:
    values = pcrs[HashAlg.SHA256]
    digest = HashAlg.SHA256.hash(b"".join(values[i] for i in sorted(values)))
    clock = ClockInfo(123456, 7, 0, True)
    return marshal_quote_attest(
        {HashAlg.SHA256: sorted(values)},
        digest,
        nonce,
        clock_info=clock,
        firmware_version=0x2000_0001,
        qualified_signer=b"\x00\x0b" + bytes(32),
    )


def _bench_rsa(runs: int) -> tuple[float, float]:
    key = rsa.generate_private_key(65537, 2048)
    ak = public_from_key(
        key.public_key(), attributes=AK_ATTRIBUTES, scheme=Scheme(Alg.RSASSA, HashAlg.SHA256)
    )
    pcrs, nonce = _pcrs(), os.urandom(32)
    attest = _attest(pcrs, nonce)
    raw = key.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    sig = marshal_signature(Signature(Alg.RSASSA, HashAlg.SHA256, raw))
    pub, pad, sha = key.public_key(), padding.PKCS1v15(), hashes.SHA256()
    verify_quote(attest, sig, ak, nonce, pcrs)
    return _paired_median_us(
        lambda: verify_quote(attest, sig, ak, nonce, pcrs),
        lambda: pub.verify(raw, attest, pad, sha),
        runs,
    )


def _bench_ecc(runs: int) -> tuple[float, float]:
    key = ec.generate_private_key(ec.SECP256R1())
    ak = public_from_key(
        key.public_key(), attributes=AK_ATTRIBUTES, scheme=Scheme(Alg.ECDSA, HashAlg.SHA256)
    )
    pcrs, nonce = _pcrs(), os.urandom(32)
    attest = _attest(pcrs, nonce)
    der = key.sign(attest, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = marshal_signature(
        Signature(Alg.ECDSA, HashAlg.SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big"))
    )
    pub, scheme = key.public_key(), ec.ECDSA(hashes.SHA256())
    verify_quote(attest, sig, ak, nonce, pcrs)
    return _paired_median_us(
        lambda: verify_quote(attest, sig, ak, nonce, pcrs),
        lambda: pub.verify(der, attest, scheme),
        runs,
    )


def bench_quote(runs: int = RUNS) -> dict[str, float]:
    """Median µs of ``verify_quote`` (RSA-2048 RSASSA, ECC P-256 ECDSA; 11 SHA-256 PCRs) and of
    the bare ``cryptography`` verify of the same signature over the same bytes."""
    rsa_full, rsa_bare = _bench_rsa(runs)
    ecc_full, ecc_bare = _bench_ecc(runs)
    return {
        "rsa2048_us": rsa_full,
        "ecc_p256_us": ecc_full,
        "bare_signature_rsa2048_us": rsa_bare,
        "bare_signature_ecc_p256_us": ecc_bare,
    }


if __name__ == "__main__":
    import json

    result = bench_quote()
    print(json.dumps(result, indent=1))
    print(
        f"ratio rsa2048 {result['rsa2048_us'] / result['bare_signature_rsa2048_us']:.3f}, "
        f"ecc_p256 {result['ecc_p256_us'] / result['bare_signature_ecc_p256_us']:.3f}"
    )
