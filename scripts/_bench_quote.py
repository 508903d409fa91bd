"""Quote verification benchmark: ``verify_quote`` against the bare ``cryptography`` signature check.

Quotes are TPMS_ATTEST structures marshalled here and signed with ``cryptography`` keys (a TPM's
signature is the same operation), over the SHA-256 bank PCRs 0-23 (the largest usual selection).
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


def _median_us(fn: Callable[[], object], runs: int) -> float:
    for _ in range(min(200, runs)):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return round(statistics.median(samples) / 1000, 2)


def _pcrs() -> dict[HashAlg, dict[int, bytes]]:
    return {HashAlg.SHA256: {i: os.urandom(32) for i in range(24)}}


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
    full = _median_us(lambda: verify_quote(attest, sig, ak, nonce, pcrs), runs)
    bare = _median_us(lambda: pub.verify(raw, attest, pad, sha), runs)
    return full, bare


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
    full = _median_us(lambda: verify_quote(attest, sig, ak, nonce, pcrs), runs)
    bare = _median_us(lambda: pub.verify(der, attest, scheme), runs)
    return full, bare


def bench_quote(runs: int = RUNS) -> dict[str, float]:
    """Median µs of ``verify_quote`` (RSA-2048 RSASSA, ECC P-256 ECDSA; 24 SHA-256 PCRs) and of
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
