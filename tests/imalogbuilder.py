"""IMA measurement lists MADE for tests, to the kernel's documented format (not captured).

Written from ``ima_fs.c`` (the binary and ASCII layouts), ``ima_template_lib.c`` (each field's
bytes), ``ima_crypto.c`` (what the template hash covers) and ``ima_queue.c`` (what a violation
extends), independently of ``assay.ima``: its PCR arithmetic is the reference the parser's replay is
checked against. Every vector built here says so in its name (``made_*``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_HASHES = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "md5": 16}
KERNEL_ALG_INDEX = {"md5": 1, "sha1": 2, "sha256": 4, "sha384": 5, "sha512": 6}


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def d_ng(alg: str, digest: bytes) -> bytes:
    return alg.encode() + b":\0" + digest


def n_ng(name: bytes) -> bytes:
    return name + b"\0"


@dataclass
class Made:
    """One entry: its template, its fields as the kernel stores them (field_data), PCR, and whether
    it records a violation (template hash left zero, PCR extended with 0xFF)."""

    template: str
    fields: list[bytes]
    pcr: int = 10
    violation: bool = False
    ascii_fields: list[str] = field(default_factory=list)

    def hashed(self) -> bytes:
        """What ima_calc_field_array_hash hashes: u32 length + data per field; for the 'ima'
        template the digest, then the name (field data includes its NUL) zero-padded to 256."""
        if self.template == "ima":
            digest, name = self.fields
            return digest + name.ljust(256, b"\0")
        return b"".join(u32(len(f)) + f for f in self.fields)

    def template_hash(self, alg: str = "sha1") -> bytes:
        if self.violation:
            return bytes(_SIZES[alg])
        return _HASHES[alg](self.hashed()).digest()


def file_entry(
    name: bytes,
    content: bytes = b"",
    *,
    alg: str = "sha256",
    template: str = "ima-ng",
    sig: bytes = b"",
    digest: bytes | None = None,
    pcr: int = 10,
) -> Made:
    """A measured file: d-ng over its content, its name (spaces already as '_': the caller's)."""
    dg = digest if digest is not None else _HASHES[alg](content).digest()
    if template == "ima":
        return Made("ima", [hashlib.sha1(content).digest() if digest is None else dg, name], pcr)
    fields = [d_ng(alg, dg), n_ng(name)]
    if template == "ima-sig":
        fields.append(sig)
    elif template == "ima-buf":
        fields.append(b"")
    elif template == "ima-modsig":
        fields += [sig, b"", b""]
    return Made(template, fields, pcr)


def buf_entry(name: bytes, buf: bytes, *, alg: str = "sha256", pcr: int = 10) -> Made:
    """Critical data or a key: ima-buf with d-ng = H(buf)."""
    return Made("ima-buf", [d_ng(alg, _HASHES[alg](buf).digest()), n_ng(name), buf], pcr)


def violation_entry(name: bytes, *, alg: str = "sha256", template: str = "ima-ng") -> Made:
    """ima_add_violation: the digest field holds IMA_DIGEST_SIZE (20) zero bytes after the prefix."""
    if template == "ima":
        return Made("ima", [bytes(20), name], violation=True)
    fields = [d_ng(alg, bytes(20)), n_ng(name)]
    if template == "ima-sig":
        fields.append(b"")
    return Made(template, fields, violation=True)


def boot_aggregate_entry(
    pcrs: Mapping[int, bytes], *, alg: str = "sha256", template: str = "ima-ng"
) -> Made:
    """boot_aggregate over PCR0–7 (SHA-1) or PCR0–9 (other banks), as Linux ≥ 5.8 computes it."""
    top = 8 if alg == "sha1" else 10
    digest = _HASHES[alg](b"".join(pcrs[i] for i in range(top))).digest()
    return file_entry(b"boot_aggregate", alg=alg, template=template, digest=digest)


def modsig_entry(
    name: bytes,
    content: bytes,
    pkcs7: bytes,
    *,
    alg: str = "sha256",
    whole: bytes | None = None,
    sig: bytes = b"",
) -> Made:
    """ima-modsig: d-ng over the whole file (``whole``, the content with its signature appended),
    d-modsig over the content without it, in the signer's algorithm ``alg``."""
    dg = _HASHES[alg](content).digest()
    file_dg = _HASHES["sha256"](whole).digest() if whole is not None else dg
    file_alg = "sha256" if whole is not None else alg
    return Made("ima-modsig", [d_ng(file_alg, file_dg), n_ng(name), sig, d_ng(alg, dg), pkcs7])


MODULE_MARKER = b"~Module signature appended~\n"


def split_module(signed: bytes) -> tuple[bytes, bytes]:
    """A signed module's content and PKCS#7, as ima_read_modsig splits them: the marker, then
    ``struct module_signature`` (12 bytes, sig_len big-endian last), then sig_len PKCS#7 bytes."""
    assert signed.endswith(MODULE_MARKER)
    body = signed[: -len(MODULE_MARKER)]
    sig_len = int.from_bytes(body[-4:], "big")
    body = body[:-12]
    return body[:-sig_len], body[-sig_len:]


def signature_v2(keyid: int, sig: bytes, *, alg: str = "sha256", xtype: int = 3) -> bytes:
    return struct.pack(">BBBIH", xtype, 2, KERNEL_ALG_INDEX[alg], keyid, len(sig)) + sig


def binary(entries: Iterable[Made], *, hash_alg: str = "sha1") -> bytes:
    """binary_runtime_measurements (hash_alg sha1) or binary_runtime_measurements_<hash_alg>."""
    out = bytearray()
    for e in entries:
        name = e.template.encode()
        out += u32(e.pcr) + e.template_hash(hash_alg) + u32(len(name)) + name
        if e.template == "ima":
            digest, raw = e.fields
            out += digest + u32(len(raw)) + raw
        else:
            data = b"".join(u32(len(f)) + f for f in e.fields)
            out += u32(len(data)) + data
    return bytes(out)


def _ascii_field(field_id: str, value: bytes) -> str:
    if not value:
        return ""
    if field_id in ("d-ng", "d-modsig"):
        alg, _, digest = value.partition(b":\0")
        return alg.decode() + ":" + digest.hex()
    if field_id in ("n-ng", "n"):
        return value.rstrip(b"\0").decode("utf-8", "surrogateescape")
    return value.hex()


_FIELDS = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
}


def ascii_lines(entries: Iterable[Made], *, hash_alg: str = "sha1") -> bytes:
    """ascii_runtime_measurements: '%2d ' PCR, hex template hash, name, ' '+field each."""
    out = []
    for e in entries:
        ids = _FIELDS.get(e.template) or tuple(e.template.split("|"))
        parts = [f"{e.pcr:2d}", e.template_hash(hash_alg).hex(), e.template]
        parts += [_ascii_field(i, v) for i, v in zip(ids, e.fields, strict=True)]
        out.append(" ".join(parts) + "\n")
    return "".join(out).encode("utf-8", "surrogateescape")


def expected_pcr(
    entries: Iterable[Made], bank: str, *, mode: str = "per-bank", pcr: int = 10
) -> bytes:
    """The PCR a TPM would hold: per-bank (Linux ≥ 5.8) or SHA-1 zero-padded (4.10–5.7)."""
    size = _SIZES[bank]
    value = bytes(size)
    for e in entries:
        if e.pcr != pcr:
            continue
        if mode == "per-bank" or bank == "sha1":
            ext = b"\xff" * size if e.violation else _HASHES[bank](e.hashed()).digest()
        else:
            sha1 = b"\xff" * 20 if e.violation else hashlib.sha1(e.hashed()).digest()
            ext = sha1 + bytes(size - 20)
        value = _HASHES[bank](value + ext).digest()
    return value


def pcrs_0_9(seed: bytes = b"boot", size: int = 32) -> dict[int, bytes]:
    """Some PCR0–9 values a firmware might have left (arbitrary, deterministic)."""
    h = _HASHES[{20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}[size]]
    return {i: h(seed + bytes([i])).digest() for i in range(10)}


def typical(n_files: int = 5, *, alg: str = "sha256", template: str = "ima-ng") -> list[Made]:
    """boot_aggregate, then n files, a violation and an ima-buf kernel_version entry."""
    agg_alg = "sha1" if template == "ima" else alg  # the 'd' field is SHA-1 (or MD5) only
    entries = [boot_aggregate_entry(pcrs_0_9(), alg=agg_alg, template=template)]
    entries += [
        file_entry(f"/usr/bin/prog{i}".encode(), b"content %d" % i, alg=alg, template=template)
        for i in range(n_files)
    ]
    entries.append(violation_entry(b"/var/log/syslog", alg=alg, template=template))
    entries.append(buf_entry(b"kernel_version", b"6.1.0-13-amd64", alg=alg))
    return entries
