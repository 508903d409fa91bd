"""Runtime policies built before a rollout, from the vendor's packages, or from a known-good log.

``runtime_from_debs``: every regular file a .deb installs, by digest, under the path IMA will log
for it — on a merged-/usr system (Debian ≥ 12) ``/bin``, ``/sbin`` and ``/lib*`` are symlinks to
their ``/usr`` twins and the kernel logs the resolved path, so a file shipped as ``/bin/ls`` is
approved as ``/usr/bin/ls`` as well. Spaces become ``_`` as in the log. No file is trusted for
having a name: a digest approves one path only.

``runtime_from_log``: what a reviewed node's IMA list measured (files and buffers by digest, the
SELinux state and policy hash it ran with); violations and entries under the given exclusions are
left out, and counted, for the operator to review.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import (
    BANK_OF_NAME,
    BOOT_AGGREGATE,
    SELINUX_POLICY_HASH,
    SELINUX_STATE,
    ImaLog,
    parse_selinux_state,
)

from .debs import DataFile, deb_info, iter_data_files, read_deb_file
from .model import Digests, digests
from .runtime import RuntimePolicy, RuntimeStatus, Selinux, freeze, glob_regex, kernel_name

MERGED_USR = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")


def logged_paths(path: str, *, merged_usr: bool = True) -> tuple[str, ...]:
    """The names IMA may log for a file installed at ``path``."""
    name = kernel_name(path)
    if merged_usr and name.startswith(MERGED_USR):
        return (name, "/usr" + name)
    return (name,)


def _package_files(data: bytes, where: str, algs: Sequence[HashAlg]) -> dict[str, Digests]:
    """Path → digests of one package's files; hard links take their target's digests."""
    out: dict[str, Digests] = {}
    links: list[DataFile] = []
    for f in iter_data_files(data, where):
        if f.hardlink_to is not None:
            links.append(f)
        else:
            out[f.path] = digests((alg, alg.hash(f.content)) for alg in algs)
    for f in links:
        assert f.hardlink_to is not None
        target = out.get(f.hardlink_to)
        if target is not None:
            out[f.path] = target
    return out


def runtime_from_debs(
    paths: Sequence[str],
    *,
    name: str,
    version: str,
    algs: Sequence[HashAlg] = (HashAlg.SHA256,),
    exclude: Sequence[str] = (),
    status: RuntimeStatus = "active",
    merged_usr: bool = True,
) -> RuntimePolicy:
    """A policy approving every file of the packages (several packages may ship one path: each
    digest is kept). Raises MalformedEvidence for a package with no files."""
    files: dict[str, list[Digests]] = {}
    labels = []
    for path in paths:
        data = read_deb_file(path)
        info = deb_info(data, path)
        found = _package_files(data, path, algs)
        if not found:
            raise MalformedEvidence("the package installs no files", where=path)
        for installed, d in found.items():
            for logged in logged_paths(installed, merged_usr=merged_usr):
                have = files.setdefault(logged, [])
                if d not in have:
                    have.append(d)
        labels.append(f"{info.package} {info.version}")
    return RuntimePolicy(
        name=name,
        version=version,
        description="files of " + ", ".join(labels),
        status=status,
        allow_sha1=HashAlg.SHA1 in algs,
        files=freeze(files),
        exclude=tuple(exclude),
    )


@dataclass(frozen=True, slots=True)
class Captured:
    """A policy captured from a log, and what was left out of it for review."""

    policy: RuntimePolicy
    violations: tuple[str, ...]
    excluded: int
    unapprovable: tuple[str, ...]


def runtime_from_log(
    log: ImaLog, *, name: str, version: str, exclude: Iterable[str] = ()
) -> Captured:
    """Approve what ``log`` measured (see the module docstring). The log proves nothing by itself:
    capture only from a node you have reviewed, and review the result."""
    globs = tuple(exclude)
    rx = glob_regex(globs)
    files: dict[str, list[Digests]] = {}
    buffers: dict[str, list[Digests]] = {}
    violations, unapprovable = [], []
    states, hashes, excluded = [], [], 0
    for e in log.entries:
        text = e.name.decode("utf-8", "surrogateescape")
        if e.index == 0 and e.name == BOOT_AGGREGATE:
            continue
        if e.violation:
            violations.append(e.display_name)
            continue
        if e.buf is not None and e.name == SELINUX_STATE:
            states.append(parse_selinux_state(e.buf, where=f"IMA entry {e.index}", offset=e.offset))
            continue
        if e.buf is not None and e.name == SELINUX_POLICY_HASH:
            hashes.append(e.buf)
            continue
        if rx is not None and rx.match(e.name):
            excluded += 1
            continue
        alg = BANK_OF_NAME.get(e.digest_alg)
        if alg is None:
            unapprovable.append(f"{e.display_name} ({e.digest_alg})")
            continue
        d = digests({alg: e.digest})
        have = (buffers if e.buf is not None else files).setdefault(text, [])
        if d not in have:
            have.append(d)
    selinux = None
    if states or hashes:
        enforcing = bool(states) and all(s.enforcing for s in states if s.initialized)
        selinux = Selinux(require_enforcing=enforcing, policy_hashes=tuple(dict.fromkeys(hashes)))
    policy = RuntimePolicy(
        name=name,
        version=version,
        description=f"captured from a {log.format} IMA list of {len(log.entries)} entries",
        allow_sha1=any(HashAlg.SHA1 in d for v in [*files.values(), *buffers.values()] for d in v),
        files=freeze(files),
        exclude=globs,
        buffers=freeze(buffers),
        selinux=selinux,
    )
    return Captured(policy, tuple(violations), excluded, tuple(unapprovable))
