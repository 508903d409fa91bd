"""Golden values from Debian packages: the EFI binaries in shim-signed, grub-efi-*-signed and
linux-image-* packages, with their Authenticode digests, labelled "<package> <version>: <file>".

A .deb is an ``ar`` archive holding ``control.tar.*`` and ``data.tar.*``; both are read in pure
Python (no dpkg needed), streaming the data archive and stopping once a kernel package's /boot is
behind us, so a 70 MB kernel package costs well under a second.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from assay.errors import MalformedEvidence

from .authenticode import authenticode_digests
from .model import BootApp, Digests, GoldenSet, Measured, Role, digests

MAX_DEB_BYTES = 512 * 1024 * 1024
MAX_MEMBER_BYTES = 256 * 1024 * 1024

# (glob on the path inside the package, role); first match wins.
_EFI_FILES: tuple[tuple[str, Role], ...] = (
    ("usr/lib/shim/shim*.efi.signed", "shim"),
    ("usr/lib/shim/*.efi.signed", "other"),
    ("usr/lib/grub/*-efi-signed/*.efi.signed", "loader"),
    ("boot/vmlinuz-*", "kernel"),
)


@dataclass(frozen=True, slots=True)
class DebInfo:
    package: str
    version: str
    depends: str = ""


def _ar_members(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    if not data.startswith(b"!<arch>\n"):
        raise MalformedEvidence("not a Debian package (no ar magic)", where=where)
    pos = 8
    while pos < len(data):
        header = data[pos : pos + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            raise MalformedEvidence(
                "truncated or corrupt ar member header", where=where, offset=pos
            )
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise MalformedEvidence("bad ar member size", where=where, offset=pos) from None
        start = pos + 60
        if size < 0 or start + size > len(data):
            raise MalformedEvidence(
                f"ar member {name!r} runs past the end", where=where, offset=pos
            )
        yield name, data[start : start + size]
        pos = start + size + (size & 1)


def _open_tar(blob: bytes, name: str, where: str) -> tarfile.TarFile:
    """A streaming reader for a package member (gzip, bzip2, xz or plain; not zstd)."""
    if not name.endswith((".tar", ".tar.gz", ".tar.xz", ".tar.bz2")):
        raise MalformedEvidence(f"unsupported package member compression {name!r}", where=where)
    return tarfile.open(fileobj=io.BytesIO(blob), mode="r|*")


def _control(blob: bytes, name: str, where: str) -> DebInfo:
    fields: dict[str, str] = {}
    with _open_tar(blob, name, where) as tar:
        for member in tar:
            if member.isfile() and posixpath.normpath(member.name) == "control":
                fh = tar.extractfile(member)
                text = fh.read(1 << 20).decode("utf-8", "replace") if fh else ""
                for line in text.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line[:1].isspace():
                        fields[key.strip()] = value.strip()
                break
    if "Package" not in fields or "Version" not in fields:
        raise MalformedEvidence("control file lacks Package or Version", where=where)
    return DebInfo(fields["Package"], fields["Version"], fields.get("Depends", ""))


def _role(path: str) -> Role | None:
    for pattern, role in _EFI_FILES:
        if fnmatch.fnmatchcase(path, pattern):
            return role
    return None


@dataclass(frozen=True, slots=True)
class DebContents:
    """What a package contributes to a golden set: its boot applications (Authenticode digests,
    PCR4) and the kernel images as files (plain digests: what GRUB measures into PCR9 when it loads
    one)."""

    info: DebInfo
    apps: tuple[BootApp, ...]
    loaded_files: tuple[Measured, ...]


def boot_apps_from_deb(data: bytes, where: str = "package") -> tuple[DebInfo, tuple[BootApp, ...]]:
    """The package's name/version and a labelled BootApp for each EFI binary or kernel it ships."""
    got = scan_deb(data, where)
    return got.info, got.apps


def scan_deb(data: bytes, where: str = "package") -> DebContents:
    """Boot applications and GRUB-loaded kernel files of a .deb (see :class:`DebContents`)."""
    members = dict(_ar_members(data, where))
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if control_name is None or data_name is None:
        raise MalformedEvidence("missing control.tar or data.tar member", where=where)
    try:
        info = _control(members[control_name], control_name, where)
        found = tuple(_scan_data(members[data_name], data_name, info, where))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise MalformedEvidence(f"corrupt package archive: {exc}", where=where) from None
    apps = tuple(app for app, _ in found)
    files = tuple(
        Measured(f"{app.label} (the file as GRUB loads it)", loaded)
        for app, loaded in found
        if loaded is not None
    )
    return DebContents(info, apps, files)


def _scan_data(
    blob: bytes, name: str, info: DebInfo, where: str
) -> Iterator[tuple[BootApp, Digests | None]]:
    kernel_pkg = info.package.startswith("linux-image-")
    found_kernel = False
    with _open_tar(blob, name, where) as tar:
        for member in tar:
            path = posixpath.normpath(member.name).lstrip("/")
            if found_kernel and kernel_pkg and not path.startswith("boot"):
                return  # /boot comes first in kernel packages; the modules behind it are irrelevant
            role = _role(path)
            if role is None or not member.isfile():
                continue
            if member.size > MAX_MEMBER_BYTES:
                raise MalformedEvidence(
                    f"{path} is larger than {MAX_MEMBER_BYTES} bytes", where=where
                )
            fh = tar.extractfile(member)
            if fh is None:
                continue
            image = fh.read()
            found_kernel = found_kernel or role == "kernel"
            label = f"{info.package} {info.version}: {posixpath.basename(path)}"
            got = authenticode_digests(image, where=f"{where}:{path}")
            flat = digests((alg, alg.hash(image)) for alg in got) if role == "kernel" else None
            yield BootApp(label=label, role=role, digests=digests(got)), flat


class DataFile(NamedTuple):
    """A file a package installs: its absolute path and content, or for a hard link the path of
    the file whose content it shares (``hardlink_to``; ``content`` is then empty)."""

    path: str
    content: bytes
    hardlink_to: str | None = None


def _install_path(name: str) -> str | None:
    """A data.tar member name (``./usr/bin/ls``) as the absolute path dpkg installs it at
    (``/usr/bin/ls``); None for the root itself."""
    rel = name[2:] if name.startswith("./") else name
    path = posixpath.normpath("/" + rel)
    return None if path in ("/", "//") else path


def iter_data_files(data: bytes, where: str = "package") -> Iterator[DataFile]:
    """Every regular file (and hard link) of a package's data.tar, streamed in archive order.
    Symlinks and directories are skipped: IMA names a file by the path it resolves to. A member
    larger than MAX_MEMBER_BYTES or a corrupt archive is MalformedEvidence."""
    members = dict(_ar_members(data, where))
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise MalformedEvidence("missing data.tar member", where=where)
    try:
        with _open_tar(members[data_name], data_name, where) as tar:
            for member in tar:
                path = _install_path(member.name)
                if path is None:
                    continue
                if member.islnk():
                    target = _install_path(member.linkname)
                    if target is not None:
                        yield DataFile(path, b"", target)
                    continue
                if not member.isfile():
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise MalformedEvidence(
                        f"{path} is larger than {MAX_MEMBER_BYTES} bytes", where=where
                    )
                fh = tar.extractfile(member)
                if fh is not None:
                    yield DataFile(path, fh.read())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise MalformedEvidence(f"corrupt package archive: {exc}", where=where) from None


def deb_info(data: bytes, where: str = "package") -> DebInfo:
    """A package's name, version and Depends from its control file."""
    members = dict(_ar_members(data, where))
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    if control_name is None:
        raise MalformedEvidence("missing control.tar member", where=where)
    try:
        return _control(members[control_name], control_name, where)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise MalformedEvidence(f"corrupt package archive: {exc}", where=where) from None


def read_deb_file(path: str) -> bytes:
    """A .deb's bytes, refusing one over MAX_DEB_BYTES before reading it all."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_DEB_BYTES + 1)
    if len(data) > MAX_DEB_BYTES:
        raise MalformedEvidence(f"larger than {MAX_DEB_BYTES} bytes", where=path)
    return data


def boot_apps_from_deb_file(path: str) -> tuple[DebInfo, tuple[BootApp, ...]]:
    got = scan_deb_file(path)
    return got.info, got.apps


def scan_deb_file(path: str) -> DebContents:
    with open(path, "rb") as fh:
        data = fh.read(MAX_DEB_BYTES + 1)
    if len(data) > MAX_DEB_BYTES:
        raise MalformedEvidence(f"larger than {MAX_DEB_BYTES} bytes", where=path)
    return scan_deb(data, path)


def set_from_debs(paths: list[str], *, name: str, version: str) -> GoldenSet:
    """A golden set from the packages alone: each boot application by Authenticode digest (PCR4),
    boot order shim → loader → kernel, and each kernel image's plain digest, which GRUB measures
    into PCR9 when it loads it. Raises MalformedEvidence for a package with nothing to boot."""
    apps: list[BootApp] = []
    files: list[Measured] = []
    labels = []
    for path in paths:
        got = scan_deb_file(path)
        if not got.apps:
            raise MalformedEvidence("no EFI binaries or kernel image in the package", where=path)
        apps.extend(got.apps)
        files.extend(got.loaded_files)
        labels.append(f"{got.info.package} {got.info.version}")
    return GoldenSet(
        name=name,
        version=version,
        description="from " + ", ".join(labels),
        boot_apps=tuple(apps),
        boot_order=("shim", "loader", "kernel"),
        measurements=MappingProxyType({9: tuple(files)} if files else {}),
    )
