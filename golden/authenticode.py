"""Authenticode (PE/COFF image) digests: what UEFI firmware extends into PCR4 for an EFI binary.

pefile parses the headers (it has no Authenticode helper); the hashing follows the Microsoft
"Windows Authenticode Portable Executable Signature Format" §"Calculating the PE image hash":

1. the headers up to SizeOfHeaders, leaving out the CheckSum field and the certificate-table
   (security) data-directory entry;
2. every section with raw data, in ascending PointerToRawData order;
3. whatever follows the last section, up to the attribute certificate table (which is skipped).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pefile

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence

_SECURITY_DIR = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]
DEFAULT_ALGS = (HashAlg.SHA256, HashAlg.SHA384)
MAX_IMAGE_BYTES = 256 * 1024 * 1024


def _regions(pe: Any, size: int, where: str) -> list[tuple[int, int]]:
    """The (start, end) byte ranges that Authenticode hashes, in order (steps 1–3)."""
    opt = pe.OPTIONAL_HEADER
    dirs = opt.DATA_DIRECTORY
    if len(dirs) <= _SECURITY_DIR:
        raise MalformedEvidence(
            "PE optional header has no certificate-table directory entry", where=where
        )
    checksum_off = opt.get_field_absolute_offset("CheckSum")
    secdir = dirs[_SECURITY_DIR]
    secdir_off = secdir.get_file_offset()
    headers_end = opt.SizeOfHeaders
    if not (checksum_off + 4 <= secdir_off and secdir_off + 8 <= headers_end <= size):
        raise MalformedEvidence(f"PE SizeOfHeaders {headers_end} is inconsistent", where=where)
    # 1. headers without CheckSum and the certificate-table entry
    regions = [(0, checksum_off), (checksum_off + 4, secdir_off), (secdir_off + 8, headers_end)]
    hashed = headers_end
    # 2. sections in file order
    sections = sorted(
        (s for s in pe.sections if s.SizeOfRawData), key=lambda s: int(s.PointerToRawData)
    )
    for s in sections:
        start, length = int(s.PointerToRawData), int(s.SizeOfRawData)
        if start + length > size:
            name = s.Name.rstrip(b"\0").decode("ascii", "replace")
            raise MalformedEvidence(
                f"PE section {name!r} ends at {start + length}, past the end of the file",
                where=where,
            )
        regions.append((start, start + length))
        hashed = max(hashed, start + length)
    # 3. trailing data, minus the certificate table
    cert_off, cert_size = int(secdir.VirtualAddress), int(secdir.Size)
    end = size
    if cert_size:
        if cert_off < hashed or cert_off + cert_size > size:
            raise MalformedEvidence(
                f"PE certificate table at {cert_off} (+{cert_size}) is outside the file's tail",
                where=where,
            )
        end = cert_off
    if end > hashed:
        regions.append((hashed, end))
    return regions


def authenticode_digests(
    data: bytes, algs: Iterable[HashAlg] = DEFAULT_ALGS, *, where: str = "PE image"
) -> dict[HashAlg, bytes]:
    """The Authenticode digest of a PE/COFF image in each of ``algs``."""
    if len(data) > MAX_IMAGE_BYTES:
        raise MalformedEvidence(f"larger than {MAX_IMAGE_BYTES} bytes", where=where)
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise MalformedEvidence(f"not a PE/COFF image: {exc.value}", where=where) from None
    try:
        regions = _regions(pe, len(data), where)
    finally:
        pe.close()
    view = memoryview(data)
    out: dict[HashAlg, bytes] = {}
    for alg in algs:
        h = alg.new()
        for start, end in regions:
            h.update(view[start:end])
        out[alg] = bytes(h.digest())
    return out


def authenticode_file(path: str, algs: Iterable[HashAlg] = DEFAULT_ALGS) -> dict[HashAlg, bytes]:
    with open(path, "rb") as fh:
        data = fh.read(MAX_IMAGE_BYTES + 1)
    return authenticode_digests(data, algs, where=path)
