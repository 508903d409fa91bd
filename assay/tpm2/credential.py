"""TPM2_MakeCredential in pure Python (TPM 2.0 Part 1 §24, Part 3 §12.6, Annex B/C of Part 1).

The verifier wraps a secret so that only the TPM holding the EK *and* an object with the given
Name can recover it with TPM2_ActivateCredential. This is what binds an AK to an EK at enrollment.

1. A random seed: RSA-OAEP-encrypted to the EK with label "IDENTITY" (RSA EK), or agreed by
   ephemeral ECDH with the EK and KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x) (ECC EK).
2. symKey = KDFa(nameAlg, seed, "STORAGE", objectName, "", EK symmetric key bits).
3. encIdentity = AES-CFB(symKey, IV = 0)(TPM2B_DIGEST(secret)).
4. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
   outerHMAC = HMAC_nameAlg(HMACkey, encIdentity || objectName).
5. credentialBlob = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity);
   secret = TPM2B_ENCRYPTED_SECRET(OAEP ciphertext, or the marshalled ephemeral TPMS_ECC_POINT).
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB (which TPM 2.0 mandates here) under "decrepit"
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from ..algorithms import HashAlg
from ..errors import MalformedEvidence, VerificationFailed
from .constants import Alg, ObjectAttributes
from .public import EccPoint, TpmPublic

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HMAC_NAMES = {
    HashAlg.SHA1: "sha1",
    HashAlg.SHA256: "sha256",
    HashAlg.SHA384: "sha384",
    HashAlg.SHA512: "sha512",
}
_CRYPTO_HASHES: dict[HashAlg, type[hashes.HashAlgorithm]] = {
    HashAlg.SHA1: hashes.SHA1,
    HashAlg.SHA256: hashes.SHA256,
    HashAlg.SHA384: hashes.SHA384,
    HashAlg.SHA512: hashes.SHA512,
}
_EK_REQUIRED = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT


def kdfa(
    hash_alg: HashAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC; the label gets its NUL."""
    if not label.endswith(b"\0"):
        label += b"\0"
    name = _HMAC_NAMES[hash_alg]
    tail = label + context_u + context_v + _U32.pack(bits)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(key, _U32.pack(counter) + tail, name).digest()
    return bytes(out[: (bits + 7) // 8])


def kdfe(
    hash_alg: HashAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF; the label gets its NUL."""
    if not label.endswith(b"\0"):
        label += b"\0"
    tail = z + label + party_u + party_v
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hash_alg.hash(_U32.pack(counter) + tail)
    return bytes(out[: (bits + 7) // 8])


def make_credential(ek: TpmPublic, object_name: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """Wrap ``secret`` for the TPM holding ``ek``, bound to the object named ``object_name``.

    Returns the marshalled (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET). Raises
    ``VerificationFailed(code="unsuitable_ek")`` for a key that cannot be an EK (not a restricted
    decryption key with AES-CFB and a SHA-1/2 nameAlg) and MalformedEvidence for a bad Name.
    The secret must be 1 .. digest size of the EK's nameAlg bytes (TPM2_MakeCredential's limit).
    """
    _check_name(object_name)
    hash_alg = _check_ek(ek)
    digest_size = hash_alg.digest_size
    if not 1 <= len(secret) <= digest_size:
        raise ValueError(f"secret must be 1 to {digest_size} bytes, got {len(secret)}")
    # 1. Seed and its encryption to the EK.
    seed, encrypted = _seed(ek, hash_alg)
    # 2.-3. Encrypt the credential.
    sym_key = kdfa(hash_alg, seed, b"STORAGE", object_name, b"", ek.symmetric.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_U16.pack(len(secret)) + secret) + encryptor.finalize()
    # 4. Outer integrity.
    hmac_key = kdfa(hash_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer = hmac.new(hmac_key, enc_identity + object_name, _HMAC_NAMES[hash_alg]).digest()
    # 5. Marshal.
    blob = _U16.pack(len(outer)) + outer + enc_identity
    return _U16.pack(len(blob)) + blob, _U16.pack(len(encrypted)) + encrypted


def _check_ek(ek: TpmPublic) -> HashAlg:
    sym = ek.symmetric
    problems = []
    if (ek.object_attributes & _EK_REQUIRED) != _EK_REQUIRED:
        problems.append("not a restricted decryption key")
    if ek.object_attributes & ObjectAttributes.SIGN_ENCRYPT:
        problems.append("a signing key")
    if sym.algorithm != Alg.AES or sym.mode != Alg.CFB or sym.key_bits not in (128, 192, 256):
        problems.append("symmetric cipher is not AES-CFB")
    if ek.name_alg not in _HMAC_NAMES:
        problems.append(f"nameAlg {ek.name_alg.bank} unsupported")
    if problems:
        raise VerificationFailed(
            "EK unsuitable for MakeCredential: " + "; ".join(problems), code="unsuitable_ek"
        )
    return ek.name_alg


def _check_name(name: bytes) -> None:
    if len(name) < 2:
        raise MalformedEvidence("object Name shorter than 2 bytes", where="object Name")
    alg = HashAlg.from_id(_U16.unpack_from(name)[0], where="object Name", offset=0)
    if len(name) != 2 + alg.digest_size:
        raise MalformedEvidence(
            f"{alg.bank} Name is {len(name)} bytes, not {2 + alg.digest_size}", where="object Name"
        )


def _seed(ek: TpmPublic, hash_alg: HashAlg) -> tuple[bytes, bytes]:
    """Step 1: the seed and what carries it to the TPM (OAEP ciphertext or an ECC point)."""
    size = hash_alg.digest_size
    key = ek.key
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(size)
        h = _CRYPTO_HASHES[hash_alg]()
        oaep = padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=b"IDENTITY\0")
        return seed, key.encrypt(seed, oaep)
    assert isinstance(ek.unique, EccPoint)
    ephemeral = ec.generate_private_key(key.curve)
    z = ephemeral.exchange(ec.ECDH(), key)
    coord = (key.curve.key_size + 7) // 8
    nums = ephemeral.public_key().public_numbers()
    x, y = nums.x.to_bytes(coord, "big"), nums.y.to_bytes(coord, "big")
    seed = kdfe(hash_alg, z, b"IDENTITY", x, ek.unique.x, size * 8)
    return seed, _U16.pack(len(x)) + x + _U16.pack(len(y)) + y
