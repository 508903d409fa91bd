"""Runtime (IMA) nodes: an ext4 root disk of real Debian packages and the initramfs that boots it.

IMA's ``tcb`` policy does not measure tmpfs or ramfs (``ima_policy.c``, the ``dont_measure
fsmagic=`` rules), so programs run from the initramfs leave no trace. A runtime node therefore
boots an initramfs that loads the kernel's own signed modules (virtio, ext4 — modules in
Debian's kernel, ``CONFIG_EXT4_FS=m``, ``CONFIG_VIRTIO_BLK=m``), mounts a second virtio disk and
``switch_root``\\ s into it: from then on every program executed, every library mapped and every
file root reads on it is measured into PCR10, under the path the kernel logs on a real system
(``d_absolute_path``: relative to the namespace root, which ``switch_root`` makes the disk).

The disk is the files of ``RUNTIME_PACKAGES`` as ``dpkg-deb -x`` unpacks them, laid out merged-/usr
like Debian 12 (``/bin``, ``/sbin``, ``/lib*`` symlinks into ``/usr``), written with
``mke2fs -d`` (no loop mount). Tampered disks add a binary no package ships, or change the bytes of
one a package does; a signed disk gives a file an ``security.ima`` signature (``evmctl ima_sign
--sigfile`` with a key the builder makes, set with ``debugfs ea_set``: no xattr on the host).

The second stage (a script in a tmpfs on the disk's ``/run``, so it is not measured) runs
``RUN_COMMANDS`` and every executable in ``/usr/local/bin``, then hands out the firmware's event
log, the kernel command line, and last the IMA list, binary and ASCII.
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
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .builder import (
    HANDOFF_BEGIN,
    HANDOFF_END,
    RootDisk,
    VmBuildError,
    cpio_newc,
    download,
    extract,
    run,
    write_atomic,
)

# What the root disk holds: a static busybox (the second stage's shell) and coreutils with the
# libraries its programs map.
RUNTIME_PACKAGES = (
    "busybox-static",
    "coreutils",
    "libc6",
    "libacl1",
    "libattr1",
    "libgmp10",
    "libselinux1",
    "libpcre2-8-0",
)
# Modules the initramfs loads (with what their .modinfo "depends=" pulls in); crc32c_generic
# because ext4's metadata checksums ask the crypto API for "crc32c", and nothing else would load it.
BOOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
# What the second stage runs from the disk (dynamic coreutils: ld.so, libc, libselinux, libpcre2,
# libgmp are mapped and measured), besides every executable in /usr/local/bin.
RUN_COMMANDS = (
    "/usr/bin/uname -r",
    "/usr/bin/id -u",
    "/usr/bin/ls -l /usr/lib/x86_64-linux-gnu",
    "/usr/bin/sha256sum /usr/share/doc/coreutils/copyright",
    "/usr/bin/expr 6 + 7",
)
PATCH_MARK = b"\0assay: bytes appended to a packaged binary\0"
IMA_BEGIN, IMA_END = "ASSAY-IMA-BEGIN", "ASSAY-IMA-END"
IMA_ASCII_BEGIN, IMA_ASCII_END = "ASSAY-IMA-ASCII-BEGIN", "ASSAY-IMA-ASCII-END"
RAN = "ASSAY-RAN"
FACT = "ASSAY-FACT"
DISK_UUID = "a55a7000-0000-4000-8000-000000000001"
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DISK_VERSION = "1"  # bump when the disk layout or build_disk changes
_RUNTIME_INIT_VERSION = "2"  # bump when the init scripts change


# The SELinux policy load, as libselinux's security_load_policy does it (load_policy calls it):
# the whole policy image in one write(2) to selinuxfs's "load" node; busybox dd with a block larger
# than the image reads it whole and writes it once.
_LOAD_POLICY = """$B mkdir -p /sys/fs/selinux
$B mount -t selinuxfs selinuxfs /sys/fs/selinux || fail "mount selinuxfs"
$B dd if=/etc/selinux/policy of=/sys/fs/selinux/load bs=16M 2>/dev/null || fail "load_policy"
"""


def _stage1(modules: Sequence[str], selinux: bool) -> str:
    """The initramfs's /init: (load the SELinux policy,) load the modules, mount the disk,
    switch_root into it."""
    return f"""#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
OUT=/dev/ttyS1
$B stty -F $OUT raw 115200
fail() {{ $B echo "ASSAY-INIT-FAILED $*" > $OUT; $B sleep 1; $B poweroff -f; }}
{_LOAD_POLICY if selinux else ""}for m in {" ".join(modules)}; do
  $B insmod /lib/modules/$m.ko || fail "insmod $m"
done
n=0
while [ ! -b /dev/vdb ]; do
  n=$((n + 1)); [ $n -gt 20 ] && fail "no /dev/vdb"; $B sleep 1
done
$B mount -t ext4 -o ro /dev/vdb /newroot || fail "mount /dev/vdb"
$B mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "tmpfs on /run"
$B cp /stage2 /newroot/run/assay-stage2 || fail "copy stage2"
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /bin/busybox sh /run/assay-stage2
"""


def _handout(path: str, begin: str, end: str, missing: str) -> str:
    return (
        f"if [ -r {path} ]; then\n"
        f"  $B echo {begin} > $OUT; $B base64 {path} > $OUT; $B echo {end} > $OUT\n"
        f"else\n  $B echo {missing} > $OUT\nfi\n"
    )


def _fact(name: str, shell: str) -> str:
    return f'[ -d /sys/fs/selinux ] && $B echo "{FACT} {name} {shell}" > $OUT\n'


def _stage2() -> str:
    """Run from the disk, then hand out the event log, the command line and the IMA list."""
    runs = "".join(f"run {cmd}\n" for cmd in RUN_COMMANDS)
    ima = "/sys/kernel/security/ima"
    return (
        "B=/bin/busybox\nOUT=/dev/ttyS1\nexport PATH=/usr/bin:/usr/sbin\n"
        "$B mount -t securityfs securityfs /sys/kernel/security\n"
        f'run() {{ "$@" > /dev/null 2>&1; $B echo "{RAN} rc=$? $*" > $OUT; }}\n'
        + runs
        + 'for f in /usr/local/bin/*; do [ -x "$f" ] && run "$f"; done\n'
        + _handout(
            "/sys/kernel/security/tpm0/binary_bios_measurements",
            HANDOFF_BEGIN,
            HANDOFF_END,
            "ASSAY-EVENTLOG-MISSING",
        )
        + '$B echo "ASSAY-CMDLINE $($B cat /proc/cmdline)" > $OUT\n'
        + _fact("selinux-enforce", "$($B cat /sys/fs/selinux/enforce)")
        # the policy as the kernel serializes it (what it hashes for selinux-policy-hash)
        + _fact("selinux-policy-sha256", "$($B sha256sum < /sys/fs/selinux/policy)")
        + _handout(f"{ima}/binary_runtime_measurements", IMA_BEGIN, IMA_END, "ASSAY-IMA-MISSING")
        + _handout(
            f"{ima}/ascii_runtime_measurements",
            IMA_ASCII_BEGIN,
            IMA_ASCII_END,
            "ASSAY-IMA-MISSING",
        )
        + "$B sleep 1\n$B poweroff -f\n"
    )


# -- kernel modules ------------------------------------------------------------------------------


def _module_name(member: str) -> str:
    return Path(member).name.removesuffix(".ko").replace("-", "_")


def _depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a module's .modinfo (comma-separated module names, maybe empty)."""
    match = re.search(rb"\0depends=([^\0]*)\0", ko)
    if match is None:
        return []
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d]


def _read_modules(kernel_deb: Path, names: set[str]) -> dict[str, bytes]:
    """One pass over the kernel package's data.tar, keeping the .ko files named ``names``."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(kernel_deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".ko")):
                    continue
                if "/kernel/" in member.name and _module_name(member.name) in names:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    found[_module_name(member.name)] = fh.read()
    except tarfile.TarError as exc:
        raise VmBuildError(f"reading modules of {kernel_deb.name}: {exc}") from None
    finally:
        proc.stdout.close()
        proc.wait(timeout=600)
    return found


def boot_modules(kernel_deb: Path, cache: Path) -> list[tuple[str, bytes]]:
    """``BOOT_MODULES`` and their dependencies from the kernel .deb, in load order (dependencies
    first), cached per package file."""
    out = cache / "pkgs" / f"{kernel_deb.stem}.modules-{'-'.join(BOOT_MODULES)}"
    order = out / "order"
    if not order.exists():
        found: dict[str, bytes] = {}
        need = set(BOOT_MODULES)
        while missing := need - set(found):
            got = _read_modules(kernel_deb, missing)
            if lost := missing - set(got):
                raise VmBuildError(f"{kernel_deb.name} has no module {sorted(lost)}")
            found |= got
            for data in got.values():
                need |= set(_depends(data))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for name, data in found.items():
            (out / f"{name}.ko").write_bytes(data)
        names = _load_order(found)
        write_atomic(order, "\n".join(names).encode())
    return [(n, (out / f"{n}.ko").read_bytes()) for n in order.read_text().split()]


def _load_order(modules: Mapping[str, bytes]) -> list[str]:
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise VmBuildError(f"module dependency cycle: {' -> '.join((*path, name))}")
        for dep in _depends(modules[name]):
            visit(dep, (*path, name))
        done.append(name)

    for name in sorted(modules):
        visit(name, ())
    return done


# -- the initramfs ------------------------------------------------------------------------------


def build_runtime_initramfs(
    busybox: Path, kernel_deb: Path, cache: Path, selinux_policy: Path | None = None
) -> Path:
    """/init (stage 1), /stage2, /bin/busybox and the boot modules (and the SELinux policy image
    as /etc/selinux/policy); gzip'd cpio, fixed metadata."""
    modules = boot_modules(kernel_deb, cache)
    init, stage2 = _stage1([n for n, _ in modules], selinux_policy is not None), _stage2()
    policy = selinux_policy.read_bytes() if selinux_policy is not None else b""
    h = hashlib.sha256(busybox.read_bytes() + hashlib.sha256(policy).digest())
    for name, data in modules:
        h.update(name.encode() + hashlib.sha256(data).digest())
    h.update((init + stage2 + _RUNTIME_INIT_VERSION).encode())
    out = cache / "images" / f"initrd-runtime-{h.hexdigest()[:16]}.img"
    if out.exists():
        return out
    dirs = ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")
    entries = [(d, 0o040755, b"") for d in dirs]
    entries += [
        ("init", 0o100755, init.encode()),
        ("stage2", 0o100644, stage2.encode()),
        ("bin/busybox", 0o100755, busybox.read_bytes()),
    ]
    entries += [(f"lib/modules/{n}.ko", 0o100644, data) for n, data in modules]
    if selinux_policy is not None:
        entries += [("etc", 0o040755, b""), ("etc/selinux", 0o040755, b"")]
        entries += [("etc/selinux/policy", 0o100644, policy)]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(cpio_newc(entries))
    write_atomic(out, buf.getvalue())
    return out


# -- the root disk ------------------------------------------------------------------------------


def tiny_elf(exit_code: int, note: bytes = b"") -> bytes:
    """A static x86-64 ELF executable that exits with ``exit_code`` (``note`` padded after the
    code): a binary no package ships, made here byte by byte."""
    code = b"\xb8\x3c\x00\x00\x00\xbf" + struct.pack("<I", exit_code) + b"\x0f\x05"  # exit(code)
    base, ehsize, phsize = 0x400000, 64, 56
    total = ehsize + phsize + len(code) + len(note)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian, version 1
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, base + ehsize + phsize, ehsize, 0, 0, ehsize, phsize, 1,
        0, 0, 0,
    )  # fmt: skip
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)  # PT_LOAD r-x
    return ehdr + phdr + code + note


def signing_key(cache: Path) -> Path:
    """The test's IMA signing key (RSA-2048, PEM), made once per cache."""
    path = cache / "keys" / "ima-test-signing-key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, pem)
    return path


def _copy_merged(src: Path, dest: Path) -> None:
    """Copy an unpacked package into ``dest`` with /bin, /sbin, /lib* moved under /usr."""
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel = here.relative_to(src)
        if rel.parts and rel.parts[0] in _MERGED:
            rel = Path("usr", *rel.parts)
        target = dest / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in list(dirnames):
            if (here / name).is_symlink():  # a symlinked directory: the link, not its contents
                _copy_link(here / name, target / name)
                dirnames.remove(name)
        for name in filenames:
            if here == src and name == ".complete":
                continue  # extract()'s marker, not a package file
            if (here / name).is_symlink():
                _copy_link(here / name, target / name)
            else:
                shutil.copy2(here / name, target / name)


def _copy_link(src: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    os.symlink(os.readlink(src), dest)


def _stage_root(debs: Iterable[Path], disk: RootDisk, cache: Path, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for deb in debs:
        _copy_merged(extract(deb, cache), staging)
    for d in _MERGED:
        if (staging / "usr" / d).is_dir():
            os.symlink(f"usr/{d}", staging / d)
    for d in ("proc", "sys", "dev", "run", "usr/local/bin"):
        (staging / d).mkdir(parents=True, exist_ok=True)
    for path, exit_code in disk.added:
        f = staging / path.lstrip("/")
        f.write_bytes(tiny_elf(exit_code, f"assay test binary {path}".encode()))
        f.chmod(0o755)
    for path in disk.patched:
        f = staging / path.lstrip("/")
        if not f.is_file():
            raise VmBuildError(f"cannot patch {path}: no such file on the disk")
        f.write_bytes(f.read_bytes() + PATCH_MARK)


def _sign(image: Path, staging: Path, paths: Sequence[str], key: Path) -> None:
    """``evmctl ima_sign --sigfile`` each file (a v2 signature of its SHA-256 digest), then put
    the signature into the disk image's ``security.ima`` with debugfs."""
    for path in paths:
        f = staging / path.lstrip("/")
        run(
            ["evmctl", "ima_sign", "--sigfile", "--key", str(key), "-a", "sha256", str(f)],
            f"evmctl ima_sign {path}",
        )
        sig = f.with_name(f.name + ".sig")
        run(
            ["debugfs", "-w", "-R", f"ea_set -f {sig} {path} security.ima", str(image)],
            f"debugfs ea_set {path}",
        )
        got = run(["debugfs", "-R", f"ea_list {path}", str(image)], f"debugfs ea_list {path}")
        if "security.ima" not in got:
            raise VmBuildError(f"debugfs did not set security.ima on {path}: {got.strip()!r}")


SELINUX_PACKAGE = "selinux-policy-default"
_SEMANAGE_CONF = "module-store = direct\nexpand-check=0\n"
_SELINUX_VERSION = "1"  # bump when build_selinux_policy changes


def build_selinux_policy(cache: Path) -> Path:
    """Debian's default SELinux policy image (policy.NN), built the way the package's postinst
    builds it — ``semodule -X 100 -n -s default`` installing every module in ``.modules`` and
    disabling the postinst's ``notdefault`` ones — into an alternate root (``semodule -p``), so
    nothing on the host changes. The package ships only modules; the image is a build product."""
    deb = download(SELINUX_PACKAGE, cache)
    out = cache / "images" / f"selinux-{deb.stem}-{_SELINUX_VERSION}.policy"
    if out.exists():
        return out
    root = out.with_name(out.name + ".root")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(deb), str(root)], f"extracting {deb.name}")
    ctl = root / ".control"
    run(["dpkg-deb", "-e", str(deb), str(ctl)], f"control files of {deb.name}")
    match = re.search(r'^notdefault="([^"]*)"', (ctl / "postinst").read_text(), re.MULTILINE)
    if match is None:
        raise VmBuildError(f"{deb.name}: no notdefault= list in its postinst")
    (root / "var/lib/selinux").mkdir(parents=True, exist_ok=True)
    (root / "etc/selinux/semanage.conf").write_text(_SEMANAGE_CONF)
    (root / "etc/selinux/config").write_text("SELINUX=enforcing\nSELINUXTYPE=default\n")
    share = root / "usr/share/selinux/default"
    modules = (share / ".modules").read_text().split()
    cmd = ["semodule", "-p", str(root), "-s", "default", "-X", "100", "-n"]
    cmd += [f"-i{share / m}.pp.bz2" for m in modules] + [f"-d{m}" for m in match.group(1).split()]
    run(cmd, "semodule (building the SELinux policy)", timeout=900)
    images = sorted((root / "etc/selinux/default/policy").glob("policy.*"))
    if len(images) != 1:
        raise VmBuildError(f"semodule left {len(images)} policy images, expected one")
    write_atomic(out, images[0].read_bytes())
    shutil.rmtree(root)
    return out


@dataclass(frozen=True, slots=True)
class RuntimeParts:
    """What a runtime node adds to a boot: its root disk, initramfs and the packages on it."""

    disk: Path
    initrd: Path
    debs: tuple[Path, ...]
    signing_key: Path | None
    selinux_policy: Path | None


def fetch_runtime_debs(cache: Path) -> tuple[Path, ...]:
    return tuple(download(name, cache) for name in RUNTIME_PACKAGES)


def build_disk(disk: RootDisk, debs: Sequence[Path], cache: Path, key: Path | None) -> Path:
    """The ext4 image (mke2fs -d of the staged tree; fixed UUID and hash seed)."""
    h = hashlib.sha256(repr(disk).encode() + _DISK_VERSION.encode())
    for deb in debs:
        h.update(deb.name.encode() + b"\0")
    if key is not None:
        h.update(hashlib.sha256(key.read_bytes()).digest())
    out = cache / "images" / f"rootfs-{h.hexdigest()[:16]}.ext4"
    if out.exists():
        return out
    staging = out.with_name(out.name + ".root")
    _stage_root(debs, disk, cache, staging)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(staging), "-L", "assay-root",
         "-U", DISK_UUID, "-E", f"hash_seed={DISK_UUID},root_owner=0:0", str(tmp), "96M"],
        "mke2fs -d",
    )  # fmt: skip
    if disk.signed:
        if key is None:
            raise VmBuildError("a disk with signed files needs a signing key")
        _sign(tmp, staging, disk.signed, key)
    shutil.rmtree(staging)
    tmp.replace(out)
    return out


def build_runtime(disk: RootDisk, busybox: Path, kernel_deb: Path, cache: Path) -> RuntimeParts:
    debs = fetch_runtime_debs(cache)
    key = signing_key(cache) if disk.signed else None
    policy = build_selinux_policy(cache) if disk.selinux else None
    return RuntimeParts(
        build_disk(disk, debs, cache, key),
        build_runtime_initramfs(busybox, kernel_deb, cache, policy),
        debs,
        key,
        policy,
    )
