"""Golden sets from the machine's apt archive: ``from-apt`` resolves, downloads and builds; and
``watch-apt`` drafts the next version when the archive offers a kernel the current set does not
approve — before any node boots it. Real apt, the configured Debian archive, real packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from golden.__main__ import main as golden_main
from golden.apt import AptError, candidate, split_spec, versions
from golden.yamlfmt import load_yaml_file

CACHE = Path(os.environ.get("ASSAY_DEB_CACHE", Path.home() / ".cache" / "assay" / "debs"))
META = "linux-image-amd64"


def _kernels(g_path: Path) -> list[str]:
    return [a.label for a in load_yaml_file(str(g_path)).boot_apps if a.role == "kernel"]


def test_from_apt_follows_the_metapackage_to_the_kernel_it_pins(tmp_path: Path) -> None:
    out = tmp_path / "set.yaml"
    rc = golden_main(["from-apt", "shim-signed", META, "-o", str(out), "--cache", str(CACHE)])
    assert rc == 0
    g = load_yaml_file(str(out))
    newest = candidate(META)
    assert newest is not None and g.version == newest  # the kernel package's version
    [kernel] = _kernels(out)
    assert kernel.startswith("linux-image-6.") and f" {newest}: vmlinuz-" in kernel
    assert {a.role for a in g.boot_apps} == {"shim", "kernel"}
    assert g.measurements[9], "the kernel file as GRUB loads it (PCR9)"


def test_watch_apt_drafts_the_next_version_when_the_archive_has_another_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = versions(META)
    newest = candidate(META)
    assert newest in published
    older = [v for v in published if v != newest]
    current = tmp_path / "current.yaml"
    # The archive still publishes the previous kernel: the set approves that one (else only shim).
    spec = f"{META}={older[-1]}" if older else "shim-signed"
    assert golden_main(["from-apt", spec, "-o", str(current), "--cache", str(CACHE)]) == 0
    nxt = tmp_path / "next.yaml"
    args = ["watch-apt", META, "--against", str(current), "-o", str(nxt), "--cache", str(CACHE)]
    assert golden_main(args) == 1
    draft = load_yaml_file(str(nxt))
    assert draft.version == newest and draft.name == load_yaml_file(str(current)).name
    assert _kernels(nxt) != _kernels(current)
    assert "draft" in capsys.readouterr().out
    # The draft is what the archive offers now: watching against it finds nothing new.
    again = ["watch-apt", META, "--against", str(nxt), "-o", str(tmp_path / "n2.yaml")]
    assert golden_main([*again, "--cache", str(CACHE)]) == 0
    assert not (tmp_path / "n2.yaml").exists()


@pytest.mark.parametrize(
    "spec", ["bad;pkg", "linux-image-amd64=1.0 && rm -rf /", "-o", "pkg=", "Upper"]
)
def test_a_package_spec_that_is_not_a_debian_name_never_reaches_apt(spec: str) -> None:
    with pytest.raises(AptError, match="is not PACKAGE or PACKAGE=VERSION"):
        split_spec(spec)


def test_an_unknown_package_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = golden_main(["from-apt", "no-such-package-assay", "-o", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 4 and err.count("\n") == 0
    assert "no candidate version of no-such-package-assay" in err
    assert not (tmp_path / "x.yaml").exists()
