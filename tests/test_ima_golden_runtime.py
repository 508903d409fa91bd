"""``golden runtime from-deb|capture``: policies from real and made packages and from IMA lists,
then appraised: what the packages install is trusted, anything else is not."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from assay.ima import ImaReplay, assume_quoted_for_review, parse_ima_log
from golden.__main__ import main as golden_main
from golden.debs import iter_data_files, read_deb_file
from golden.runtime_build import logged_paths, runtime_from_debs
from golden.runtime_yaml import load_runtime_file
from verifier.appraisal.runtime import appraise_runtime
from verifier.appraisal.verdict import Verdict, VerdictStatus

from . import imalogbuilder as b

CACHE = Path(os.environ.get("ASSAY_DEB_CACHE", Path.home() / ".cache" / "assay" / "debs"))
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def coreutils() -> Path:
    """Debian's real coreutils package (it ships /bin/ls: merged-/usr logs it as /usr/bin/ls)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    hits = sorted(CACHE.glob("coreutils_*.deb"))
    if not hits:
        subprocess.run(
            ["apt-get", "download", "coreutils"], cwd=CACHE, check=True, capture_output=True
        )
        hits = sorted(CACHE.glob("coreutils_*.deb"))
    return hits[-1]


@pytest.fixture(scope="module")
def made_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package MADE with dpkg-deb (an independent writer): a name with a space, a hard link, a
    symlink, a file under /lib."""
    root = tmp_path_factory.mktemp("pkg")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: made-tool\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    (root / "opt" / "my tool").mkdir(parents=True)
    (root / "opt" / "my tool" / "run").write_bytes(b"#!/bin/sh\necho run\n")
    os.link(root / "opt" / "my tool" / "run", root / "opt" / "my tool" / "run-again")
    os.symlink("run", root / "opt" / "my tool" / "link")
    (root / "lib" / "made").mkdir(parents=True)
    (root / "lib" / "made" / "libmade.so").write_bytes(b"\x7fELF made")
    out = root.parent / "made-tool_1.0_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _extracted(deb: Path, tmp: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    return tmp


def test_from_deb_digests_equal_dpkg_extracted_files_under_logged_paths(
    coreutils: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rt.yaml"
    assert (
        golden_main(["runtime", "from-deb", str(coreutils), "-o", str(out), "--version", "9"]) == 0
    )
    policy = load_runtime_file(str(out))
    assert policy.ref == "debian-runtime@9" and policy.description.startswith("files of coreutils ")
    root = _extracted(coreutils, tmp_path / "x")
    ls = hashlib.sha256((root / "bin" / "ls").read_bytes()).digest()
    assert policy.files["/bin/ls"][0][HashAlg.SHA256] == ls
    assert policy.files["/usr/bin/ls"][0][HashAlg.SHA256] == ls  # what a merged-/usr kernel logs
    regular = {
        "/" + str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    links = {"/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink()}
    assert regular <= set(policy.files) and links
    assert all(s not in policy.files or s.removeprefix("/usr") in regular for s in links)


def test_from_deb_made_package_names_files_as_ima_logs_them(made_deb: Path) -> None:
    policy = runtime_from_debs([str(made_deb)], name="t", version="1")
    run = hashlib.sha256(b"#!/bin/sh\necho run\n").digest()
    assert policy.files["/opt/my_tool/run"][0][HashAlg.SHA256] == run
    assert policy.files["/opt/my_tool/run-again"][0][HashAlg.SHA256] == run  # hard link
    assert "/opt/my_tool/link" not in policy.files  # IMA logs the symlink's target
    assert "/usr/lib/made/libmade.so" in policy.files and "/lib/made/libmade.so" in policy.files


def test_iter_data_files_streams_regular_files_and_hard_links(made_deb: Path) -> None:
    files = {f.path: f for f in iter_data_files(read_deb_file(str(made_deb)), "made")}
    assert (
        files["/opt/my tool/run-again"].hardlink_to == "/opt/my tool/run"
        or files["/opt/my tool/run"].hardlink_to == "/opt/my tool/run-again"
    )
    assert "/opt/my tool/link" not in files


def test_logged_paths_alias_merged_usr_only_for_the_split_directories() -> None:
    assert logged_paths("/sbin/init") == ("/sbin/init", "/usr/sbin/init")
    assert logged_paths("/usr/bin/env") == ("/usr/bin/env",)
    assert logged_paths("/bin/a b", merged_usr=False) == ("/bin/a_b",)


def _log_of(made: list[b.Made]) -> bytes:
    return b.binary([b.boot_aggregate_entry(b.pcrs_0_9()), *made])


def test_policy_from_the_package_trusts_its_files_and_nothing_else(made_deb: Path) -> None:
    policy = runtime_from_debs([str(made_deb)], name="t", version="1")
    good = [
        b.file_entry(b"/opt/my_tool/run", b"#!/bin/sh\necho run\n"),
        b.file_entry(b"/usr/lib/made/libmade.so", b"\x7fELF made"),
    ]
    pcrs = {HashAlg.SHA256: b.pcrs_0_9()}

    def verdict(made: list[b.Made]) -> Verdict:
        ev = assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(_log_of(made)))
        return Verdict.of(appraise_runtime(ev, [policy], NOW, boot_pcrs=pcrs))

    assert verdict(good).status is VerdictStatus.TRUSTED
    tampered = [*good[:1], b.file_entry(b"/usr/lib/made/libmade.so", b"\x7fELF evil")]
    assert verdict(tampered).status is VerdictStatus.UNTRUSTED
    assert verdict([*good, b.file_entry(b"/tmp/x", b"x")]).status is VerdictStatus.UNTRUSTED


def test_capture_then_appraise_the_same_log_is_trusted_and_a_new_file_is_not(
    tmp_path: Path,
) -> None:
    selinux = b.buf_entry(b"selinux-state", b"initialized=1;enforcing=1;checkreqprot=0;")
    made = [
        b.file_entry(b"/usr/bin/bash", b"bash"),
        b.buf_entry(b"kernel_version", b"6.1.0"),
        selinux,
        b.buf_entry(b"selinux-policy-hash", hashlib.sha256(b"policy").digest()),
        b.violation_entry(b"/var/log/wtmp"),
        b.file_entry(b"/var/lib/apt/lists/x", b"changes"),
    ]
    log_path = tmp_path / "ascii_runtime_measurements"
    log_path.write_bytes(b.ascii_lines([b.boot_aggregate_entry(b.pcrs_0_9()), *made]))
    out = tmp_path / "captured.yaml"
    args = [
        "runtime",
        "capture",
        "--from-log",
        str(log_path),
        "-o",
        str(out),
        "--exclude",
        "/var/*",
    ]
    assert golden_main(args) == 0
    policy = load_runtime_file(str(out))
    assert set(policy.files) == {"/usr/bin/bash"} and set(policy.buffers) == {"kernel_version"}
    assert policy.selinux is not None and policy.selinux.require_enforcing
    ev = assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(log_path.read_bytes()))
    pcrs = {HashAlg.SHA256: b.pcrs_0_9()}
    assert (
        Verdict.of(appraise_runtime(ev, [policy], NOW, boot_pcrs=pcrs)).status
        is VerdictStatus.TRUSTED
    )
    more = _log_of([*made, b.file_entry(b"/usr/bin/nc", b"netcat")])
    ev2 = assume_quoted_for_review(ImaReplay.initial(), parse_ima_log(more))
    checks = appraise_runtime(ev2, [policy], NOW, boot_pcrs=pcrs)
    assert [c.reason for c in checks if c.status == "fail"] == [
        "ima_file_not_approved",
        "ima_entries_not_approved",
    ]


def test_capture_of_a_malformed_log_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(_log_of([b.file_entry(b"/a", b"a")])[:-5])
    assert (
        golden_main(["runtime", "capture", "--from-log", str(bad), "-o", str(tmp_path / "o.yaml")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "IMA entry 1, offset" in err[0] and str(bad) in err[0]


def test_runtime_show_prints_a_policy_and_refuses_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made_deb: Path
) -> None:
    out = tmp_path / "p.yaml"
    assert golden_main(["runtime", "from-deb", str(made_deb), "-o", str(out)]) == 0
    capsys.readouterr()
    assert golden_main(["runtime", "show", str(out), "--json"]) == 0
    assert '"/opt/my_tool/run"' in capsys.readouterr().out
    out.write_text(out.read_text().replace("kind: runtime-policy", "kind: nope"))
    assert golden_main(["runtime", "show", str(out)]) == 4
