"""Node images for real measured-boot VMs, built from Debian packages only and reproducibly.

Inputs are ``.deb`` files fetched with ``apt-get download`` into a cache (``$ASSAY_VM_CACHE``, default
``~/.cache/assay-vm``): shim-signed, grub-efi-amd64-signed, the ``linux-image-*`` meta packages and the
versioned kernel packages they depend on, busybox-static and systemd-boot-efi. Every built artefact
(initramfs, UKI, ESP image) is a pure function of those files and the variant's settings, written
with fixed timestamps, and cached under a name that includes a digest of its inputs.

The ESP is a FAT image made without loop mounts (``mkfs.vfat -C`` + ``mmd``/``mcopy``). What the
firmware measures is file content, not FAT metadata, so the PCRs of a variant are reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import ConfigurationError

OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.ms.fd"
OVMF_VARS_MS = OVMF_DIR / "OVMF_VARS_4M.ms.fd"  # Microsoft + Debian keys enrolled: Secure Boot on
OVMF_VARS_PLAIN = OVMF_DIR / "OVMF_VARS_4M.fd"  # no keys: Secure Boot off

# program (or file) on the host -> the Debian package that provides it
HOST_TOOLS: Mapping[str, str] = {
    "qemu-system-x86_64": "qemu-system-x86",
    str(OVMF_CODE): "ovmf",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "objcopy": "binutils",
    "swtpm": "swtpm",
    "swtpm_setup": "swtpm-tools",
    "dpkg-deb": "dpkg",
    "mke2fs": "e2fsprogs",  # the runtime nodes' root disk (mke2fs -d, debugfs ea_set)
    "debugfs": "e2fsprogs",
    "evmctl": "ima-evm-utils",  # the ima-sig node's signed file
    "semodule": "policycoreutils",  # Debian's SELinux policy image, built as its postinst does
}

DEFAULT_CMDLINE = "console=ttyS0,115200 panic=-1 loglevel=4"
KERNEL_META = {"amd64": "linux-image-amd64", "cloud": "linux-image-cloud-amd64"}
BOOT_PACKAGES = ("shim-signed", "grub-efi-amd64-signed", "busybox-static", "systemd-boot-efi")
_INIT_VERSION = "1"  # bump when INIT_SCRIPT changes, so cached initramfs images are rebuilt
_UKI_VERSION = "2"  # bump when build_uki changes

# The guest's /init: hand the firmware's event log to the host over the second serial port.
HANDOFF_BEGIN = "ASSAY-EVENTLOG-BEGIN"
HANDOFF_END = "ASSAY-EVENTLOG-END"
INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t securityfs securityfs /sys/kernel/security
LOG=/sys/kernel/security/tpm0/binary_bios_measurements
OUT=/dev/ttyS1
/bin/busybox stty -F $OUT raw 115200
if [ -r $LOG ]; then
  /bin/busybox echo {HANDOFF_BEGIN} > $OUT
  /bin/busybox base64 $LOG > $OUT
  /bin/busybox echo {HANDOFF_END} > $OUT
else
  /bin/busybox echo ASSAY-EVENTLOG-MISSING > $OUT
fi
/bin/busybox echo "ASSAY-CMDLINE $(/bin/busybox cat /proc/cmdline)" > $OUT
/bin/busybox sleep 1
/bin/busybox poweroff -f
"""


class VmBuildError(ConfigurationError):
    """The host lacks a tool, a package cannot be fetched, or an image cannot be built."""


def cache_dir() -> Path:
    root = Path(os.environ.get("ASSAY_VM_CACHE") or "~/.cache/assay-vm").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def run(cmd: Sequence[str], what: str, *, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run a host command; any failure becomes one VmBuildError line naming the step."""
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmBuildError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise VmBuildError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout


# -- 1. host setup -----------------------------------------------------------------------------


def _present(tool: str) -> bool:
    return Path(tool).exists() if tool.startswith("/") else shutil.which(tool) is not None


def ensure_host() -> None:
    """Install the Debian packages that provide the missing host tools (root; one apt-get update)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not _present(tool)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise VmBuildError(f"missing host packages {missing} and not root to install them")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    try:
        run(cmd, "apt-get install")
    except VmBuildError:
        apt_update()
        run(cmd, "apt-get install")
    still = [tool for tool in HOST_TOOLS if not _present(tool)]
    if still:
        raise VmBuildError(f"after installing {missing}, still missing: {still}")


# -- 2. packages -------------------------------------------------------------------------------


def _deb_field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), name], f"reading {name} of {deb.name}").strip()


_candidates: dict[str, str | None] = {}
"""Candidate versions asked of apt in this process, until the next ``apt-get update``: a session
builds a dozen images from the same few packages, and each ``apt-cache policy`` takes half a second."""


def candidate(package: str) -> str | None:
    """The version apt would install today (``apt-cache policy``'s Candidate), or None."""
    if package not in _candidates:
        out = run(["apt-cache", "policy", package], f"apt-cache policy {package}")
        match = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
        found = None if match is None or match.group(1) == "(none)" else match.group(1)
        _candidates[package] = found
    return _candidates[package]


def apt_update() -> None:
    """``apt-get update``: the package lists change, so the candidates asked before are dropped."""
    run(["apt-get", "update"], "apt-get update")
    _candidates.clear()


def _cached(package: str, version: str, debs: Path) -> Path | None:
    # apt-get download names the file PACKAGE_VERSION_ARCH.deb with the epoch's ":" as "%3a"
    found = sorted(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
    return found[0] if found else None


def _fetch(package: str, version: str, debs: Path) -> bool:
    try:
        run(["apt-get", "download", f"{package}={version}"], "apt-get download", cwd=debs)
    except VmBuildError:
        return False
    return True


def download(package: str, cache: Path) -> Path:
    """The .deb of the version of ``package`` that apt offers today (its candidate), from the
    cache or fetched into it. A cached file of another version is never used instead: when the
    archive moves on (a new kernel ABI), the next build takes the new package."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    version = candidate(package)
    if version is not None and (hit := _cached(package, version, debs)) is not None:
        return hit
    if version is None or not _fetch(package, version, debs):
        # no package lists yet, or lists older than the archive (that version is gone from it)
        apt_update()
        version = candidate(package)
        if version is None:
            raise VmBuildError(f"apt knows no candidate version of {package}")
        run(["apt-get", "download", f"{package}={version}"], f"apt-get download {package}",
            cwd=debs)  # fmt: skip
    hit = _cached(package, version, debs)
    if hit is None:
        raise VmBuildError(f"apt-get download {package}={version} left no .deb in {debs}")
    return hit


def kernel_dependency(meta_deb: Path) -> str:
    """The versioned ``linux-image-<abi>-<flavour>`` package a meta package depends on."""
    depends = _deb_field(meta_deb, "Depends")
    match = re.search(r"\b(linux-image-\d[\w.+-]*)", depends)
    if match is None:
        raise VmBuildError(f"{meta_deb.name}: no versioned linux-image in Depends: {depends!r}")
    return match.group(1)


def extract(deb: Path, cache: Path, *, only: str | None = None) -> Path:
    """``dpkg-deb -x`` into a cached directory named after the .deb file.

    ``only`` limits it to one directory of the package (``./boot`` of a kernel package: its
    modules are of no use to the node and take hundreds of MB).
    """
    dest = cache / "pkgs" / deb.stem
    if not (dest / ".complete").exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        if only is None:
            run(["dpkg-deb", "-x", str(deb), str(dest)], f"extracting {deb.name}")
        else:
            tar = dest / ".fsys.tar"
            with tar.open("wb") as fh:
                proc = subprocess.run(
                    ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=fh, check=False, timeout=600
                )
            if proc.returncode != 0:
                raise VmBuildError(f"dpkg-deb --fsys-tarfile {deb.name} failed")
            run(
                ["tar", "-x", "-f", str(tar), "-C", str(dest), only],
                f"extracting {only} of {deb.name}",
            )
            tar.unlink()
        (dest / ".complete").write_text(deb.name)
    return dest


@dataclass(frozen=True, slots=True)
class Kernel:
    flavour: str
    meta_deb: Path
    deb: Path
    vmlinuz: Path


def fetch_kernel(flavour: str, cache: Path) -> Kernel:
    """The kernel of ``flavour`` ("amd64", "cloud"): meta .deb, versioned .deb, its vmlinuz."""
    if flavour not in KERNEL_META:
        raise VmBuildError(f"unknown kernel flavour {flavour!r} (one of {sorted(KERNEL_META)})")
    meta = download(KERNEL_META[flavour], cache)
    package = kernel_dependency(meta)
    deb = download(package, cache)
    root = extract(deb, cache, only="./boot")
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise VmBuildError(f"{deb.name}: expected one /boot/vmlinuz-*, found {len(images)}")
    return Kernel(flavour, meta, deb, images[0])


@dataclass(frozen=True, slots=True)
class BootFiles:
    """The EFI binaries and tools taken from the cached packages."""

    shim: Path
    grub: Path
    busybox: Path
    stub: Path
    systemd_boot: Path
    debs: tuple[Path, ...]


def fetch_boot_files(cache: Path) -> BootFiles:
    debs = {name: download(name, cache) for name in BOOT_PACKAGES}
    roots = {name: extract(deb, cache) for name, deb in debs.items()}
    files = BootFiles(
        shim=roots["shim-signed"] / "usr/lib/shim/shimx64.efi.signed",
        grub=roots["grub-efi-amd64-signed"] / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        busybox=roots["busybox-static"] / "bin/busybox",
        stub=roots["systemd-boot-efi"] / "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        systemd_boot=roots["systemd-boot-efi"] / "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        debs=tuple(debs.values()),
    )
    for path in (files.shim, files.grub, files.busybox, files.stub, files.systemd_boot):
        if not path.is_file():
            raise VmBuildError(f"{path} not found in the extracted packages")
    return files


# -- 3. initramfs, UKI and ESP ------------------------------------------------------------------


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    """One cpio "newc" record with fixed owner and mtime (0), padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4) + data
    return out + b"\0" * (-len(out) % 4)


def cpio_newc(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A cpio newc archive of (path, mode, content) entries plus the trailer."""
    body = b"".join(
        _cpio_entry(name, mode, data, i + 1) for i, (name, mode, data) in enumerate(entries)
    )
    return body + _cpio_entry("TRAILER!!!", 0, b"", 0)


def build_initramfs(busybox: Path, cache: Path) -> Path:
    """gzip'd cpio: /init (the hand-off script), /bin/busybox and the directories it mounts on."""
    blob = busybox.read_bytes()
    key = hashlib.sha256(blob + INIT_SCRIPT.encode() + _INIT_VERSION.encode()).hexdigest()[:16]
    out = cache / "images" / f"initrd-{key}.img"
    if out.exists():
        return out
    dirs = ("bin", "dev", "proc", "sys", "tmp")
    entries = [(d, 0o040755, b"") for d in dirs]
    entries += [("init", 0o100755, INIT_SCRIPT.encode()), ("bin/busybox", 0o100755, blob)]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(cpio_newc(entries))
    write_atomic(out, buf.getvalue())
    return out


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def zero_pe_timestamp(path: Path) -> None:
    """Zero the COFF TimeDateStamp (objcopy stamps the build time into it) and the optional
    header's CheckSum computed over it (outside the Authenticode digest; firmware ignores it)."""
    data = bytearray(path.read_bytes())
    if data[:2] != b"MZ" or len(data) < 0x40:
        raise VmBuildError(f"{path} is not a PE image")
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0":
        raise VmBuildError(f"{path}: no PE signature at 0x{pe:x}")
    struct.pack_into("<I", data, pe + 8, 0)  # TimeDateStamp
    struct.pack_into("<I", data, pe + 24 + 64, 0)  # CheckSum (same offset in PE32 and PE32+)
    path.write_bytes(bytes(data))


OS_RELEASE = 'PRETTY_NAME="Assay test node"\nID=assay\nVERSION_ID="1"\n'


def build_uki(stub: Path, kernel: Path, initrd: Path, cmdline: str, cache: Path) -> Path:
    """A unified kernel image: systemd's EFI stub with .osrel, .cmdline, .linux and .initrd."""
    h = hashlib.sha256()
    for part in (stub.read_bytes(), kernel.read_bytes(), initrd.read_bytes()):
        h.update(hashlib.sha256(part).digest())
    h.update(cmdline.encode() + OS_RELEASE.encode() + _UKI_VERSION.encode())
    out = cache / "images" / f"uki-{h.hexdigest()[:16]}.efi"
    if out.exists():
        return out
    work = cache / "images" / f"uki-{h.hexdigest()[:16]}.d"
    work.mkdir(parents=True, exist_ok=True)
    (work / "osrel").write_text(OS_RELEASE)
    (work / "cmdline").write_text(cmdline)
    sections = (
        (".osrel", work / "osrel", 0x20000),
        (".cmdline", work / "cmdline", 0x30000),
        (".linux", kernel, 0x2000000),
        (".initrd", initrd, 0x3000000),
    )
    cmd = ["objcopy"]
    for name, path, vma in sections:
        cmd += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}=0x{vma:x}"]
    tmp = work / "uki.efi"
    run([*cmd, str(stub), str(tmp)], "objcopy (UKI)")
    zero_pe_timestamp(tmp)
    tmp.replace(out)
    shutil.rmtree(work)
    return out


def grub_cfg(cmdline: str) -> str:
    """The grub.cfg of the reference boot (its commands are what GRUB measures into PCR8)."""
    return (
        "set timeout=0\n"
        "set default=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_output serial console\n"
        "menuentry measured-boot-test {\n"
        f"  linux /vmlinuz {cmdline}\n"
        "  initrd /initrd.img\n"
        "}\n"
    )


def build_esp(files: Mapping[str, bytes | Path], out: Path, size_mb: int = 64) -> Path:
    """A FAT image holding ``files`` (ESP path -> content), made with mkfs.vfat + mtools."""
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    staging = out.with_name(out.name + ".files")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run(
        ["mkfs.vfat", "-C", "-F", "32", "-i", "41535359", "-n", "ASSAYESP", str(tmp),
         str(size_mb * 1024)],
        "mkfs.vfat",
    )  # fmt: skip
    env_img = f"-i{tmp}"
    made: set[str] = set()
    for i, (dest, content) in enumerate(sorted(files.items())):
        parts = dest.strip("/").split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in made:
                run(["mmd", env_img, f"::/{d}"], f"mmd {d}")
                made.add(d)
        src = content if isinstance(content, Path) else staging / f"f{i}"
        if not isinstance(content, Path):
            src.write_bytes(content)
        run(["mcopy", "-o", env_img, str(src), f"::/{dest.strip('/')}"], f"mcopy {dest}")
    shutil.rmtree(staging)
    tmp.replace(out)
    return out


# -- firmware variables -------------------------------------------------------------------------

EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")  # 8BE4DF61-93CA-11D2-AA0D-…
_AUTH_VAR_HEADER = struct.Struct("<HBBIQ16sIII16s")  # StartId .. VendorGuid: 60 bytes
_VAR_START_ID, _VAR_ADDED = 0x55AA, 0x3F
_VAR_NV_BS_RT = 0x7


def _varstore_end(fd: bytes) -> tuple[int, int]:
    """(offset of the first free byte, end of the store) in an OVMF_VARS image (authenticated
    variable store right after the firmware volume header: 28-byte store header, then 4-aligned
    records whose data directly follows the name)."""
    if len(fd) < 0x80 or fd[0x28:0x2C] != b"_FVH":
        raise VmBuildError("OVMF variables template: no firmware volume header")
    (fv_header,) = struct.unpack_from("<H", fd, 0x30)
    (store_size,) = struct.unpack_from("<I", fd, fv_header + 16)
    end = min(fv_header + store_size, len(fd))
    off = (fv_header + 28 + 3) & ~3
    while off + _AUTH_VAR_HEADER.size <= end:
        start, *_, name_size, data_size, _guid = _AUTH_VAR_HEADER.unpack_from(fd, off)
        if start != _VAR_START_ID:
            return off, end
        off = (off + _AUTH_VAR_HEADER.size + name_size + data_size + 3) & ~3
    raise VmBuildError("OVMF variables template: variable store has no free space")


def vars_with_boot_next(template: Path, option: int, cache: Path) -> Path:
    """A copy of ``template`` with ``BootNext`` = ``option`` added (non-volatile, boot and
    runtime access): BDS boots that option first, then the normal BootOrder."""
    fd = template.read_bytes()
    out = (
        cache / "images" / (f"vars-{hashlib.sha256(fd).hexdigest()[:16]}-bootnext-{option:04X}.fd")
    )
    if out.exists():
        return out
    free, end = _varstore_end(fd)
    name, data = "BootNext\0".encode("utf-16-le"), struct.pack("<H", option)
    record = _AUTH_VAR_HEADER.pack(
        _VAR_START_ID, _VAR_ADDED, 0, _VAR_NV_BS_RT, 0, bytes(16), 0, len(name), len(data),
        EFI_GLOBAL_VARIABLE,
    ) + name + data  # fmt: skip
    if free + len(record) > end or fd[free : free + len(record)] != b"\xff" * len(record):
        raise VmBuildError(f"OVMF variables template: no room for BootNext at 0x{free:x}")
    write_atomic(out, fd[:free] + record + fd[free + len(record) :])
    return out


# OVMF's "EFI Internal Shell" (Fv(7CB8BDC9-…)/FvFile(7C04A583-…)) is Boot0002 in Debian's
# OVMF_VARS_4M.ms.fd (a record the firmware left when the template was made). Debian's build
# refuses to run the shell with Secure Boot on (CVE-2023-48733): it is loaded, measured into PCR4,
# its entry point returns EFI_SECURITY_VIOLATION, and BDS goes on with BootOrder (the disk: shim).
SHELL_BOOT_OPTION = 0x0002


# -- 4. variants -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootDisk:
    """A runtime node's ext4 root disk (``tests/vm/runtime_image.py``): the runtime packages, plus
    ``added`` (path, exit code): binaries no package ships, made by the builder; ``patched``: packaged
    files whose bytes the builder changes; ``signed``: files given an IMA signature by the test key;
    ``selinux``: the initramfs loads Debian's default SELinux policy before anything else.
    Every executable in /usr/local/bin is run by the node."""

    added: tuple[tuple[str, int], ...] = ()
    patched: tuple[str, ...] = ()
    signed: tuple[str, ...] = ()
    selinux: bool = False


@dataclass(frozen=True, slots=True)
class Variant:
    """A node to boot. ``layout`` is "shim-grub" (Secure Boot on) or "uki" / "sdboot-uki" (off).
    With ``root_disk`` the node boots the runtime initramfs and switches to that disk."""

    name: str
    layout: str
    kernel: str = "amd64"
    cmdline: str = DEFAULT_CMDLINE
    secure_boot: bool = True
    description: str = ""
    boot_next: int | None = None  # a boot option the firmware starts before BootOrder
    root_disk: RootDisk | None = None


# IMA's built-in tcb policy (executed, mmapped-executable, and root-read files; modules, firmware)
# plus critical data (kernel version, SELinux state and policy hash), the ima-ng template (Debian's
# kernel defaults to ima-sig). Several ima_policy= are allowed: the kernel's handler ORs each in
# (ima_policy.c). SELinux: Debian's kernel starts AppArmor unless told otherwise
# (CONFIG_DEFAULT_SECURITY_APPARMOR), and boots permissive unless enforcing=1
# (CONFIG_SECURITY_SELINUX_DEVELOP).
IMA_CMDLINE = (
    DEFAULT_CMDLINE
    + " ima_policy=tcb ima_policy=critical_data ima_template=ima-ng security=selinux enforcing=1"
)
UNKNOWN_BINARY = "/usr/local/bin/assay-unknown"
PATCHED_BINARY = "/usr/bin/uname"
SIGNED_BINARY = "/usr/local/bin/assay-signed"

VARIANTS: Mapping[str, Variant] = {
    v.name: v
    for v in (
        Variant("sb", "shim-grub", description="Secure Boot: shim -> GRUB -> Debian kernel"),
        Variant(
            "sb-cmdline",
            "shim-grub",
            cmdline=DEFAULT_CMDLINE + " nokaslr",
            description="Secure Boot, kernel command line changed in grub.cfg",
        ),
        Variant(
            "sb-cloud",
            "shim-grub",
            kernel="cloud",
            description="Secure Boot, the cloud kernel flavour instead of the generic one",
        ),
        Variant(
            "sb-shell",
            "shim-grub",
            boot_next=SHELL_BOOT_OPTION,
            description="Secure Boot, OVMF's built-in UEFI Shell started before shim (BootNext)",
        ),
        Variant("uki", "uki", secure_boot=False, description="UKI as BOOTX64.EFI, Secure Boot off"),
        Variant(
            "uki-sdboot",
            "sdboot-uki",
            secure_boot=False,
            description="systemd-boot (an extra EFI application) loads the UKI, Secure Boot off",
        ),
        Variant(
            "ima",
            "shim-grub",
            cmdline=IMA_CMDLINE,
            root_disk=RootDisk(selinux=True),
            description="Secure Boot, IMA tcb + critical_data (ima-ng), SELinux enforcing, "
            "programs run from an ext4 disk",
        ),
        Variant(
            "ima-unknown",
            "shim-grub",
            cmdline=IMA_CMDLINE,
            root_disk=RootDisk(added=((UNKNOWN_BINARY, 0),), selinux=True),
            description=f"as ima, and a binary no package ships runs ({UNKNOWN_BINARY})",
        ),
        Variant(
            "ima-patched",
            "shim-grub",
            cmdline=IMA_CMDLINE,
            root_disk=RootDisk(patched=(PATCHED_BINARY,), selinux=True),
            description=f"as ima, {PATCHED_BINARY} has bytes appended (another digest)",
        ),
        Variant(
            "ima-selinux0",
            "shim-grub",
            cmdline=IMA_CMDLINE + " selinux=0",
            root_disk=RootDisk(selinux=True),
            description="as ima, selinux=0 on the kernel command line",
        ),
        Variant(
            "ima-sig",
            "shim-grub",
            cmdline=IMA_CMDLINE.replace("ima_template=ima-ng", "ima_template=ima-sig"),
            root_disk=RootDisk(added=((SIGNED_BINARY, 0),), signed=(SIGNED_BINARY,), selinux=True),
            description=f"IMA with ima-sig, {SIGNED_BINARY} signed by a key made by the builder",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class NodeImage:
    """A built variant: the ESP, the firmware variables template, and what went into it."""

    variant: Variant
    esp: Path
    ovmf_vars: Path
    kernel: Kernel
    boot: BootFiles
    initrd: Path
    uki: Path | None = None
    debs: tuple[Path, ...] = field(default=())
    disk: Path | None = None  # a runtime node's ext4 root disk
    runtime_debs: tuple[Path, ...] = ()  # the packages on it (for ``golden runtime from-deb``)
    signing_key: Path | None = None  # the key its signed files were signed with (PEM)
    selinux_policy: Path | None = None  # the SELinux policy image its initramfs loads

    @property
    def packages(self) -> tuple[Path, ...]:
        """The .debs whose binaries this node boots (for ``golden from-deb``)."""
        return (self.boot.debs[0], self.boot.debs[1], self.kernel.deb)


def _esp_files(variant: Variant, kernel: Kernel, boot: BootFiles, initrd: Path, uki: Path | None
               ) -> dict[str, bytes | Path]:  # fmt: skip
    if variant.layout == "shim-grub":
        return {
            "EFI/BOOT/BOOTX64.EFI": boot.shim,
            "EFI/BOOT/grubx64.efi": boot.grub,
            "EFI/debian/grub.cfg": grub_cfg(variant.cmdline).encode(),
            "vmlinuz": kernel.vmlinuz,
            "initrd.img": initrd,
        }
    assert uki is not None
    if variant.layout == "uki":
        return {"EFI/BOOT/BOOTX64.EFI": uki}
    if variant.layout == "sdboot-uki":
        return {
            "EFI/BOOT/BOOTX64.EFI": boot.systemd_boot,
            "EFI/Linux/assay.efi": uki,
            "loader/loader.conf": b"timeout 0\n",
        }
    raise VmBuildError(f"unknown ESP layout {variant.layout!r}")


def build(variant: Variant, cache: Path | None = None) -> NodeImage:
    """Fetch, extract and assemble everything ``variant`` boots; reuses the cache when it can."""
    cache = cache or cache_dir()
    ensure_host()
    boot = fetch_boot_files(cache)
    kernel = fetch_kernel(variant.kernel, cache)
    parts = None
    if variant.root_disk is not None:
        from .runtime_image import build_runtime  # it builds on this module's helpers

        parts = build_runtime(variant.root_disk, boot.busybox, kernel.deb, cache)
        initrd = parts.initrd
    else:
        initrd = build_initramfs(boot.busybox, cache)
    uki = None
    if variant.layout != "shim-grub":
        uki = build_uki(boot.stub, kernel.vmlinuz, initrd, variant.cmdline, cache)
    files = _esp_files(variant, kernel, boot, initrd, uki)
    h = hashlib.sha256(variant.layout.encode())
    for dest, content in sorted(files.items()):
        data = content.read_bytes() if isinstance(content, Path) else content
        h.update(dest.encode() + b"\0" + hashlib.sha256(data).digest())
    esp = build_esp(files, cache / "images" / f"esp-{variant.name}-{h.hexdigest()[:16]}.img")
    ovmf_vars = OVMF_VARS_MS if variant.secure_boot else OVMF_VARS_PLAIN
    if variant.boot_next is not None:
        ovmf_vars = vars_with_boot_next(ovmf_vars, variant.boot_next, cache)
    debs = (*boot.debs, kernel.deb)
    if parts is None:
        return NodeImage(variant, esp, ovmf_vars, kernel, boot, initrd, uki, debs)
    return NodeImage(variant, esp, ovmf_vars, kernel, boot, initrd, uki, debs, parts.disk,
                     parts.debs, parts.signing_key, parts.selinux_policy)  # fmt: skip
