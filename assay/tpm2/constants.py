"""TPM 2.0 numbers (TPM 2.0 Part 2) that the structures in this package use."""

from __future__ import annotations

import enum


class Alg(enum.IntEnum):
    """The TPM_ALG_IDs of object types, schemes and ciphers (hash algorithms are ``HashAlg``)."""

    RSA = 0x0001
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    NULL = 0x0010
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SM4 = 0x0013
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class EccCurve(enum.IntEnum):
    """TPM_ECC_CURVE values of the curves Assay can verify with."""

    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT: what the TPM lets an object do (Part 2 §8.3)."""

    FIXED_TPM = 0x00000002
    ST_CLEAR = 0x00000004
    FIXED_PARENT = 0x00000010
    SENSITIVE_DATA_ORIGIN = 0x00000020
    USER_WITH_AUTH = 0x00000040
    ADMIN_WITH_POLICY = 0x00000080
    NO_DA = 0x00000400
    ENCRYPTED_DUPLICATION = 0x00000800
    RESTRICTED = 0x00010000
    DECRYPT = 0x00020000
    SIGN_ENCRYPT = 0x00040000
    X509SIGN = 0x00080000


TPM_GENERATED_VALUE = 0xFF544347
"""TPMS_ATTEST.magic: the TPM puts this first in everything it signs about itself."""


class AttestType(enum.IntEnum):
    """TPMI_ST_ATTEST: what a TPMS_ATTEST attests."""

    NV = 0x8014
    COMMAND_AUDIT = 0x8015
    SESSION_AUDIT = 0x8016
    CERTIFY = 0x8017
    QUOTE = 0x8018
    TIME = 0x8019
    CREATION = 0x801A
    NV_DIGEST = 0x801C


SIGNATURE_SCHEMES_RSA = frozenset({Alg.RSASSA, Alg.RSAPSS})
SIGNATURE_SCHEMES_ECC = frozenset({Alg.ECDSA, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR})
