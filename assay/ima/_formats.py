"""What the kernel writes into an IMA measurement list: hash algorithm names, template formats.

Sources (read, not copied): ``Documentation/security/IMA-templates.rst`` (fields and templates),
``security/integrity/ima/ima_template.c`` (the built-in templates), ``ima_template_lib.c`` (how
each field is written), ``crypto/hash_info.c`` (``hash_algo_name`` / ``hash_digest_size``: the
names a ``d-ng`` field carries and the indices a signature header carries).
"""

from __future__ import annotations

from types import MappingProxyType

from ..algorithms import HashAlg

# The kernel's enum hash_algo, in order (include/uapi/linux/hash_info.h): index -> (name, size).
KERNEL_HASH_ALGOS: tuple[tuple[str, int], ...] = (
    ("md4", 16),
    ("md5", 16),
    ("sha1", 20),
    ("rmd160", 20),
    ("sha256", 32),
    ("sha384", 48),
    ("sha512", 64),
    ("sha224", 28),
    ("rmd128", 16),
    ("rmd256", 32),
    ("rmd320", 40),
    ("wp256", 32),
    ("wp384", 48),
    ("wp512", 64),
    ("tgr128", 16),
    ("tgr160", 20),
    ("tgr192", 24),
    ("sm3", 32),
    ("streebog256", 32),
    ("streebog512", 64),
    ("sha3-256", 32),
    ("sha3-384", 48),
    ("sha3-512", 64),
)

# Kernel name -> its enum hash_algo index (what a signature header and struct ima_file_id carry);
# "sm3-256" is the pre-5.11 spelling of "sm3".
KERNEL_HASH_INDEX: MappingProxyType[str, int] = MappingProxyType(
    {name: i for i, (name, _size) in enumerate(KERNEL_HASH_ALGOS)} | {"sm3-256": 17}
)

# Name (as bytes, the way a d-ng field spells it) -> digest size. Kernels before 5.11 spelled SM3
# "sm3-256"; both are accepted.
DIGEST_SIZES: MappingProxyType[bytes, int] = MappingProxyType(
    {name.encode(): size for name, size in KERNEL_HASH_ALGOS} | {b"sm3-256": 32}
)

# The d-ng algorithm names that are also TPM PCR banks / policy digest keys.
BANK_OF_NAME: MappingProxyType[str, HashAlg] = MappingProxyType(
    {
        "sha1": HashAlg.SHA1,
        "sha256": HashAlg.SHA256,
        "sha384": HashAlg.SHA384,
        "sha512": HashAlg.SHA512,
        "sm3": HashAlg.SM3_256,
        "sm3-256": HashAlg.SM3_256,
    }
)

# Field identifiers this parser understands (IMA-templates.rst, "Supported Template Fields").
FIELD_IDS = frozenset({"d", "n", "d-ng", "n-ng", "sig", "buf", "d-modsig", "modsig"})

# Built-in template name -> its fields (ima_template.c builtin_templates).
TEMPLATES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "ima": ("d", "n"),
        "ima-ng": ("d-ng", "n-ng"),
        "ima-sig": ("d-ng", "n-ng", "sig"),
        "ima-buf": ("d-ng", "n-ng", "buf"),
        "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
    }
)

IMA_DIGEST_SIZE = 20
"""The 'd' field's size and the zero digest a violation's d/d-ng field carries (IMA_DIGEST_SIZE)."""

IMA_EVENT_NAME_LEN_MAX = 255
"""The 'n' field's limit; the 'ima' template hashes the name zero-padded to this plus one."""

MAX_TEMPLATE_NAME = 255
MAX_FIELDS = 15  # IMA_TEMPLATE_NUM_FIELDS_MAX


def template_fields(name: str) -> tuple[str, ...] | None:
    """The fields of a template name: a built-in one, or a custom ``ima_template_fmt`` (the kernel
    writes the format string as the name, e.g. ``d-ng|n-ng|sig``) made only of known fields.
    None for anything else: the parser then refuses the entry."""
    known = TEMPLATES.get(name)
    if known is not None:
        return known
    fields = tuple(name.split("|"))
    if 0 < len(fields) <= MAX_FIELDS and all(f in FIELD_IDS for f in fields):
        return fields
    return None
