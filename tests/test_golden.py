"""Golden sets: YAML and CoRIM formats, Authenticode digests, .deb builders, the CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import cbor2
import pytest

from assay.algorithms import HashAlg
from assay.errors import ConfigurationError, MalformedEvidence
from assay.eventlog import assume_quoted_for_review, parse_event_log
from assay.events import EventType
from golden.__main__ import main as golden_main
from golden.authenticode import authenticode_digests
from golden.capture import capture
from golden.corim import export_corim, import_corim
from golden.debs import boot_apps_from_deb_file
from golden.yamlfmt import GoldenFormatError, dump_yaml, load_yaml, load_yaml_file

from .conftest import CORPUS, load_manifest

VECTORS = Path(__file__).parent / "vectors" / "golden"
SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
CACHE = Path(os.environ.get("ASSAY_DEB_CACHE", Path.home() / ".cache" / "assay" / "debs"))
MANIFEST_KERNEL_PKG = "linux-image-6.1.0-56-amd64"


def _vlog(path: Path):  # type: ignore[no-untyped-def]
    log = parse_event_log(path.read_bytes())
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]
    return assume_quoted_for_review(log, bank)


def _manifest_authenticode() -> dict[str, str]:
    row = next(r for r in load_manifest() if r["file"].endswith("secureboot-shim-grub-kernel.bin"))
    text = row["notable_content"].split("Authenticode SHA-256:")[1]
    out = {}
    for part in text.split(","):
        name, digest = part.split()
        out[name] = digest
    return out


def _kernel_package() -> str:
    """The manifest's kernel if the archive still has it, else the newest signed amd64 kernel."""
    policy = subprocess.run(
        ["apt-cache", "policy", MANIFEST_KERNEL_PKG], capture_output=True, text=True
    )
    if "Candidate:" in policy.stdout and "(none)" not in policy.stdout.split("Candidate:")[1][:10]:
        return MANIFEST_KERNEL_PKG
    found = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-image-[0-9.-]+-amd64$"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = sorted(n for n in found if n.startswith("linux-image-"))
    assert names, "no signed kernel package found in the archive"
    return names[-1]


@pytest.fixture(scope="session")
def debs() -> dict[str, Path]:
    """shim-signed, grub-efi-amd64-signed and a kernel .deb, downloaded once into a cache dir."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wanted = ["shim-signed", "grub-efi-amd64-signed", _kernel_package()]
    have = {}
    for name in wanted:
        hits = sorted(CACHE.glob(f"{name}_*.deb"))
        if not hits:
            subprocess.run(
                ["apt-get", "download", name], cwd=CACHE, check=True, capture_output=True
            )
            hits = sorted(CACHE.glob(f"{name}_*.deb"))
        have[name] = hits[-1]
    return have


# --- YAML -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["secureboot-shim-grub-kernel.bin", "uki-systemd-stub.bin"])
def test_captured_set_round_trips_through_yaml(name: str) -> None:
    g = capture(_vlog(CORPUS / "qemu-ovmf-debian12" / name), name="fleet", version="3")
    text = dump_yaml(g)
    assert load_yaml(text) == g
    assert dump_yaml(load_yaml(text)) == text


def test_captured_secure_boot_set_holds_the_real_boot_chain_and_keys() -> None:
    g = capture(_vlog(SB_LOG), name="fleet", version="1")
    manifest = _manifest_authenticode()
    sha256s = {a.digests[HashAlg.SHA256].hex() for a in g.boot_apps}
    assert sha256s == set(manifest.values())
    assert g.secure_boot.required is True
    assert len(g.secure_boot.pk or ()) == 1 and len(g.secure_boot.kek or ()) == 2
    assert g.cmdlines[0].exact == "/vmlinuz console=ttyS0,115200 panic=-1 loglevel=4"
    assert g.shim.sbat_levels[0].startswith("sbat,1,")


@pytest.mark.parametrize(
    ("vector", "line", "needle"),
    [
        ("unknown-key.yaml", 8, "unknown key 'requried'"),
        ("short-digest.yaml", 6, "boot_apps[0].sha256: expected 64 hex digits, got 62"),
        ("sha1-not-allowed.yaml", 5, "allow_sha1"),
        ("revoked-without-reason.yaml", 3, "needs a status_reason"),
        ("bad-regex.yaml", 4, "bad regular expression"),
        ("syntax.yaml", 3, "YAML syntax"),
        ("bad-role.yaml", 5, "expected one of shim, loader, kernel, driver, other"),
    ],
)
def test_malformed_yaml_is_one_line_error_naming_file_and_line(
    vector: str, line: int, needle: str
) -> None:
    path = VECTORS / vector
    with pytest.raises(GoldenFormatError) as info:
        load_yaml_file(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message
    assert "\n" not in message
    assert isinstance(info.value, ConfigurationError)


def test_empty_and_non_mapping_documents_are_rejected() -> None:
    with pytest.raises(GoldenFormatError, match="empty document"):
        load_yaml("", "x.yaml")
    with pytest.raises(GoldenFormatError, match=r"x\.yaml:1: expected a mapping, got a list"):
        load_yaml("- 1\n", "x.yaml")


# --- CoRIM ----------------------------------------------------------------------------------------


def test_corim_export_import_gives_the_same_set() -> None:
    g = capture(_vlog(SB_LOG), name="fleet", version="7").with_status("revoked", "CVE-2026-1234")
    blob = export_corim(g)
    assert import_corim(blob) == g
    top = cbor2.loads(blob)
    assert top.tag == 501
    comid = cbor2.loads(top.value[1][0].value)
    measurements = comid[4][0][0][1]
    apps = [m for m in measurements if str(m[0]).startswith("boot_app/")]
    algs = {pair[0] for m in apps for pair in m[1][2]}
    assert algs == {1, 7, 8}  # IANA named-information: sha-256 = 1, sha-384 = 7, sha-512 = 8


def test_corim_sha1_digests_use_the_text_algorithm_name() -> None:
    g = capture(_vlog(CORPUS / "go-tpm-tools" / "debian-10.bin"), name="legacy", version="1")
    assert g.allow_sha1
    blob = export_corim(g)
    assert b"sha-1" in blob
    assert import_corim(blob) == g


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b"", "not valid CBOR"),
        (b"\xff\x00", "not valid CBOR"),
        (cbor2.dumps([1, 2]), "top level: expected CBORTag"),
        (cbor2.dumps(cbor2.CBORTag(500, {})), "expected tag 501"),
        (cbor2.dumps(cbor2.CBORTag(501, {0: "x"})), "assay extension"),
    ],
)
def test_malformed_corim_is_a_clear_error(blob: bytes, needle: str) -> None:
    with pytest.raises(GoldenFormatError, match=r"x\.cbor: CoRIM: ") as info:
        import_corim(blob, "x.cbor")
    assert needle in str(info.value)


def test_truncated_corim_is_rejected() -> None:
    blob = export_corim(capture(_vlog(SB_LOG), name="fleet", version="1"))
    with pytest.raises(GoldenFormatError, match="not valid CBOR"):
        import_corim(blob[: len(blob) // 2], "x.cbor")


# --- Authenticode and .deb ------------------------------------------------------------------------


def test_authenticode_rejects_non_pe_input() -> None:
    with pytest.raises(MalformedEvidence, match="not a PE/COFF image"):
        authenticode_digests(b"MZ" + b"\0" * 100, where="junk.efi")


def test_from_deb_digests_equal_lief_and_the_real_log(debs: dict[str, Path]) -> None:
    import lief

    pcr4 = {
        e.digests[HashAlg.SHA256]
        for e in parse_event_log(SB_LOG.read_bytes()).events
        if e.pcr == 4 and e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    }
    manifest = _manifest_authenticode()
    seen_roles = set()
    for package, path in debs.items():
        info, apps = boot_apps_from_deb_file(str(path))
        assert info.package == package and apps
        extracted = _extract(path)
        for app in apps:
            seen_roles.add(app.role)
            file_name = app.label.split(": ", 1)[1]
            binary = lief.PE.parse(str(extracted[file_name]))
            # second, independent implementation: LIEF's authentihash
            assert app.digests[HashAlg.SHA256] == bytes(
                binary.authentihash(lief.PE.ALGORITHMS.SHA_256)
            )
            assert app.digests[HashAlg.SHA384] == bytes(
                binary.authentihash(lief.PE.ALGORITHMS.SHA_384)
            )
            key = file_name if file_name in manifest else None
            if key and _is_manifest_version(info.package, info.version):
                assert app.digests[HashAlg.SHA256].hex() == manifest[key]
                assert app.digests[HashAlg.SHA256] in pcr4
    assert seen_roles >= {"shim", "loader", "kernel"}


def _is_manifest_version(package: str, version: str) -> bool:
    return {
        "shim-signed": "+16.1-",
        "grub-efi-amd64-signed": "2.06+13+deb12u2",
        MANIFEST_KERNEL_PKG: "",
    }.get(package, "\0") in version


def _extract(deb: Path) -> dict[str, Path]:
    """Unpack with dpkg-deb (a second reader of the archive) and index EFI files by name."""
    out = CACHE / "x" / deb.stem
    if not out.is_dir():
        out.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return {
        p.name: p
        for p in out.rglob("*")
        if p.name.endswith(".efi.signed") or p.name.startswith("vmlinuz-")
    }


def test_from_deb_cli_then_appraisal_approves_the_debian_boot_chain(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "deb.yaml"
    assert (
        golden_main(["from-deb", *map(str, debs.values()), "-o", str(out), "--name", "debian12"])
        == 0
    )
    g = load_yaml_file(str(out))
    assert g.boot_order == ("shim", "loader", "kernel")
    labels = [a.label for a in g.boot_apps]
    assert any(
        label.startswith("shim-signed ") and label.endswith("shimx64.efi.signed")
        for label in labels
    )


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_capture_validate_revoke_diff_export_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = tmp_path / "s.yaml"
    assert (
        golden_main(
            ["capture", "--from-log", str(SB_LOG), "-o", str(s), "--name", "f", "--version", "2"]
        )
        == 0
    )
    assert golden_main(["validate", str(s)]) == 0
    assert "f@2 (active) is valid" in capsys.readouterr().out
    r = tmp_path / "r.yaml"
    shutil.copy(s, r)
    assert golden_main(["revoke", str(r), "--reason", "CVE-2026-9"]) == 0
    assert golden_main(["diff", str(s), str(r)]) == 1
    diff = capsys.readouterr().out
    assert '~ status: "active" -> "revoked"' in diff
    c = tmp_path / "r.cbor"
    assert golden_main(["export", str(r), "--corim", str(c)]) == 0
    back = tmp_path / "back.yaml"
    assert golden_main(["import", str(c), "-o", str(back)]) == 0
    assert load_yaml_file(str(back)) == load_yaml_file(str(r))
    assert golden_main(["diff", str(r), str(back)]) == 0


def test_cli_add_efi_prints_digests_and_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nstatus: lost\n")
    assert golden_main(["validate", str(bad)]) == 4
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"assay-golden: error: {bad}:3: status: expected one of active, retired, revoked, got 'lost'"
    )
    junk = tmp_path / "junk.efi"
    junk.write_bytes(b"not a pe")
    assert golden_main(["add-efi", str(junk), "--label", "junk"]) == 2
    assert "not a PE/COFF image" in capsys.readouterr().err


def test_from_deb_kernel_file_digest_is_what_grub_measures_into_pcr9(debs: dict[str, Path]) -> None:
    """The kernel image's plain digest (GRUB's PCR9 measurement of the file it loads) comes from
    the package too, beside its Authenticode digest; shim and GRUB contribute no PCR9 file."""
    from golden.debs import scan_deb_file

    for package, path in debs.items():
        got = scan_deb_file(str(path))
        extracted = _extract(path)
        if package.startswith("linux-image-"):
            (kernel,) = got.loaded_files
            name = kernel.label.split(": ", 1)[1].split(" ", 1)[0]
            image = extracted[name].read_bytes()
            assert kernel.digests[HashAlg.SHA256] == hashlib.sha256(image).digest()
            assert kernel.digests[HashAlg.SHA384] == hashlib.sha384(image).digest()
        else:
            assert got.loaded_files == ()
