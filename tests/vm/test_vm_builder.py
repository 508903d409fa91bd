"""The node images are a pure function of the .deb files: rebuilt from scratch, byte-identical."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from . import builder, runtime_image
from .fleet import Fleet
from .runner import VmBootError, parse_handoff, parse_runtime_handoff

pytestmark = pytest.mark.vm


def test_initramfs_and_uki_rebuild_byte_identical_in_a_fresh_cache(
    fleet: Fleet, tmp_path: Path
) -> None:
    image = fleet.nodes["uki"].image
    assert image.uki is not None
    initrd = builder.build_initramfs(image.boot.busybox, tmp_path)
    assert initrd != image.initrd
    assert initrd.read_bytes() == image.initrd.read_bytes()
    uki = builder.build_uki(
        image.boot.stub, image.kernel.vmlinuz, initrd, builder.DEFAULT_CMDLINE, tmp_path
    )
    assert uki != image.uki
    assert (
        hashlib.sha256(uki.read_bytes()).digest() == hashlib.sha256(image.uki.read_bytes()).digest()
    )


def test_initramfs_holds_init_and_busybox_with_fixed_metadata(fleet: Fleet) -> None:
    archive = gzip.decompress(fleet.nodes["sb"].image.initrd.read_bytes())
    names, pos = [], 0
    while True:
        header = archive[pos : pos + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mtime, size, namesize = fields[5], fields[6], fields[11]
        name = archive[pos + 110 : pos + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            break
        assert mtime == 0 and fields[2] == fields[3] == 0  # mtime, uid, gid
        names.append(name)
        pos += 110 + namesize
        pos += -pos % 4
        pos += size + (-(pos + size) % 4)
    assert {"init", "bin/busybox", "proc", "sys", "dev"} <= set(names)


def test_handoff_without_markers_or_with_bad_base64_is_a_one_line_error() -> None:
    with pytest.raises(VmBootError, match="markers missing"):
        parse_handoff("ASSAY-EVENTLOG-MISSING\nASSAY-CMDLINE x\n")
    with pytest.raises(VmBootError, match="not valid base64"):
        parse_handoff(f"{builder.HANDOFF_BEGIN}\n!!!!\n{builder.HANDOFF_END}\n")
    log, cmdline = parse_handoff(
        f"{builder.HANDOFF_BEGIN}\r\nAAEC\r\nAw==\r\n{builder.HANDOFF_END}\r\nASSAY-CMDLINE a b\r\n"
    )
    assert (log, cmdline) == (b"\x00\x01\x02\x03", "a b")


def test_runtime_handoff_gives_the_ima_lists_the_programs_run_and_the_facts() -> None:
    r = runtime_image
    text = (
        f"{r.RAN} rc=0 /usr/bin/id -u\r\n{r.RAN} rc=127 /usr/local/bin/x\r\n"
        f"{r.FACT} selinux-policy-sha256 ab12  -\r\n{r.FACT} selinux-enforce 1\r\n"
        f"{r.IMA_BEGIN}\r\nAAEC\r\n{r.IMA_END}\r\n{r.IMA_ASCII_BEGIN}\r\nMTA=\r\n{r.IMA_ASCII_END}\r\n"
    )
    got = parse_runtime_handoff(text)
    assert (got.ima_log, got.ima_ascii) == (b"\x00\x01\x02", b"10")
    assert got.ran == ("rc=0 /usr/bin/id -u", "rc=127 /usr/local/bin/x")
    assert got.facts == {"selinux-policy-sha256": "ab12", "selinux-enforce": "1"}
    assert parse_runtime_handoff("ASSAY-IMA-MISSING\n").ima_log is None
    with pytest.raises(VmBootError, match="IMA list has no end marker"):
        parse_runtime_handoff(f"{r.IMA_BEGIN}\nAAEC\n")


def test_boot_modules_load_after_their_dependencies_and_a_cycle_is_refused() -> None:
    def ko(depends: str) -> bytes:
        return b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1\0"

    mods = {"ext4": ko("mbcache,jbd2,crc16"), "jbd2": ko(""), "mbcache": ko(""), "crc16": ko("")}
    order = runtime_image._load_order(mods)
    assert sorted(order) == sorted(mods) and order.index("ext4") == 3
    with pytest.raises(builder.VmBuildError, match="cycle"):
        runtime_image._load_order({"a": ko("b"), "b": ko("a")})


def test_tiny_elf_is_a_static_x86_64_executable_with_one_load_segment() -> None:
    elf = runtime_image.tiny_elf(3, b"note")
    assert elf[:4] == b"\x7fELF" and elf[4:6] == b"\x02\x01"  # 64-bit, little-endian
    assert int.from_bytes(elf[16:18], "little") == 2  # ET_EXEC
    assert int.from_bytes(elf[18:20], "little") == 0x3E  # x86-64
    assert int.from_bytes(elf[96:104], "little") == len(elf)  # PT_LOAD p_filesz: the whole file
    assert elf.endswith(b"\x0f\x05note")  # exit(3) by syscall, then the note


def test_boot_next_is_appended_to_the_variables_template_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    template = builder.OVMF_VARS_MS
    out = builder.vars_with_boot_next(template, 0x0002, tmp_path)
    old, new = template.read_bytes(), out.read_bytes()
    assert len(new) == len(old)
    free, _ = builder._varstore_end(old)
    assert new[:free] == old[:free]
    name = "BootNext\0".encode("utf-16-le")
    record_end = free + 60 + len(name) + 2
    assert new[record_end:] == old[record_end:]
    assert new[free : free + 4] == b"\xaa\x55\x3f\x00"  # StartId, VAR_ADDED
    assert new[free + 44 : free + 60] == builder.EFI_GLOBAL_VARIABLE
    assert new[free + 60 : record_end] == name + b"\x02\x00"
    assert builder._varstore_end(new)[0] == (record_end + 3) & ~3  # the store walks past it
    junk = tmp_path / "junk.fd"
    junk.write_bytes(b"\xff" * 4096)
    with pytest.raises(builder.VmBuildError, match="no firmware volume header"):
        builder.vars_with_boot_next(junk, 2, tmp_path)
