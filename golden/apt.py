"""Golden sets straight from the machine's apt archive, before any node boots what it ships.

``resolve`` turns ``PACKAGE`` or ``PACKAGE=VERSION`` into an exact version (apt's candidate when none
is given), ``fetch`` downloads it with ``apt-get download`` into a cache and follows a metapackage
(``linux-image-amd64``, ``linux-image-cloud-amd64``) to the versioned kernel package its
``Depends:`` pins, so the set holds the binaries a node will boot, not a name. ``draft_next``
notices that the archive now offers other binaries than a set approves and drafts the next version.

apt is run as a user runs it (``apt-cache policy``, ``apt-get download``): the machine's configured
sources decide what "the archive" is. Nothing here trusts the archive for more than the digests it
yields; an operator reviews the set before it is activated.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assay.errors import ConfigurationError

from .debs import DebInfo, scan_deb_file, set_from_debs
from .model import GoldenSet

# A Debian package name and version (Policy §5.6.1, §5.6.12): nothing else reaches apt's argv.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[A-Za-z0-9.+~-]+")
# A metapackage's pin on its versioned kernel: "linux-image-6.1.0-57-amd64 (= 6.1.158-1)".
_KERNEL_PIN = re.compile(r"(linux-image-[a-z0-9.+-]+)\s*\(=\s*([^)\s]+)\s*\)")


class AptError(ConfigurationError):
    """apt could not resolve or download a package (named in the message)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    package: str
    version: str
    path: Path


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 900) -> str:
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise AptError(f"{cmd[0]} is not installed (apt-based systems only)") from None
    except subprocess.TimeoutExpired:
        raise AptError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise AptError(f"{' '.join(cmd)} failed: {last[0]}")
    return done.stdout


def update() -> None:
    """``apt-get update``: what "the archive" offers is what the last update fetched."""
    _run(["apt-get", "update"])


def split_spec(spec: str) -> tuple[str, str | None]:
    """``PACKAGE[=VERSION]`` → (package, version or None); refuses anything else."""
    package, sep, version = spec.partition("=")
    if not _PACKAGE.fullmatch(package) or (sep and not _VERSION.fullmatch(version)):
        raise AptError(f"{spec!r} is not PACKAGE or PACKAGE=VERSION")
    return package, version if sep else None


def candidate(package: str) -> str | None:
    """The version apt would install today (``apt-cache policy``'s Candidate), or None."""
    out = _run(["apt-cache", "policy", package])
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    return m.group(1) if m and m.group(1) != "(none)" else None


def versions(package: str) -> list[str]:
    """Every version of ``package`` the archive publishes, as ``apt-cache madison`` lists them
    (newest first)."""
    out = _run(["apt-cache", "madison", package])
    found = [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]
    return list(dict.fromkeys(found))


def _deb_name(package: str, version: str) -> str:
    # apt-get download writes PACKAGE_VERSION_ARCH.deb with the epoch's ":" as "%3a".
    return f"{package}_{version.replace(':', '%3a')}_"


def download(package: str, version: str, cache: Path) -> Path:
    """The .deb of exactly ``package`` ``version``, from ``cache`` or fetched into it."""
    cache.mkdir(parents=True, exist_ok=True)
    prefix = _deb_name(package, version)
    for path in sorted(cache.glob(prefix + "*.deb")):
        return path
    _run(["apt-get", "download", f"{package}={version}"], cwd=cache)
    found = sorted(cache.glob(prefix + "*.deb"))
    if not found:
        raise AptError(f"apt-get download {package}={version} left no .deb in {cache}")
    return found[0]


def fetch(specs: Sequence[str], cache: Path) -> list[Resolved]:
    """Each ``PACKAGE[=VERSION]`` downloaded; a package with nothing to boot (a metapackage) is
    replaced by the versioned kernel package its ``Depends:`` pins."""
    out: list[Resolved] = []
    for spec in specs:
        package, version = split_spec(spec)
        version = version or candidate(package)
        if version is None:
            raise AptError(f"apt knows no candidate version of {package} (apt-get update?)")
        path = download(package, version, cache)
        got = scan_deb_file(str(path))
        if not got.apps:
            out.append(_follow(got.info, cache))
        else:
            out.append(Resolved(package, version, path))
    return out


def _follow(meta: DebInfo, cache: Path) -> Resolved:
    m = _KERNEL_PIN.search(meta.depends)
    if m is None:
        raise AptError(
            f"{meta.package} {meta.version} ships nothing to boot and pins no versioned "
            f"linux-image in Depends: {meta.depends!r}"
        )
    package, version = m.group(1), m.group(2)
    return Resolved(package, version, download(package, version, cache))


def from_apt(specs: Sequence[str], cache: Path, *, name: str, version: str | None) -> GoldenSet:
    """A set from the archive's packages (see :func:`golden.debs.set_from_debs`); its version
    defaults to the kernel package's version, else the last package's."""
    resolved = fetch(specs, cache)
    kernels = [r for r in resolved if r.package.startswith("linux-image-")]
    auto = (kernels or resolved)[-1].version
    return set_from_debs([str(r.path) for r in resolved], name=name, version=version or auto)


def _approves(g: GoldenSet) -> tuple[frozenset[tuple[str, bytes]], ...]:
    apps = frozenset((alg.bank, d) for a in g.boot_apps for alg, d in a.digests.items())
    files = frozenset(
        (alg.bank, d)
        for items in g.measurements.values()
        for m in items
        for alg, d in m.digests.items()
    )
    return apps, files


def draft_next(current: GoldenSet, specs: Sequence[str], cache: Path) -> GoldenSet | None:
    """The set the archive's packages make today, named like ``current``, when it approves other
    binaries than ``current`` does; None when nothing changed."""
    fresh = from_apt(specs, cache, name=current.name, version=None)
    if _approves(fresh) == _approves(current):
        return None
    if fresh.version == current.version:  # same kernel, another shim or GRUB
        n = 2
        while f"{current.version}+{n}" == current.version:
            n += 1
        fresh = dataclasses.replace(fresh, version=f"{current.version}+{n}")
    return fresh
