"""The demo's story, stated before it runs, and the check that reality told the same story.

Expectations are states and reason codes, never digests or package versions: they must hold
whatever kernel Debian ships on the day. The scenario is closed-world: a node the inventory shows
that the story does not name is a failure too, like a node the story names that is missing.

Pure (standard library only), so ``tests/test_demo_story.py`` checks the checker without a VM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The verifier's one-line reason is "<code>: <message>" for a failed or unknown verdict and
# "all N checks passed" for a trusted one; the story names the latter ALL_PASSED.
ALL_PASSED = "all_checks_passed"
NO_REASON = "-"
ABSENT = "absent"
_CODE = re.compile(r"([a-z][a-z0-9_]*):")
_ALL = re.compile(r"all \d+ checks passed")


@dataclass(frozen=True, slots=True)
class Expect:
    state: str
    reason: str

    def __str__(self) -> str:
        return f"{self.state}/{self.reason}"

    def to_json(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the inventory must say, node by node, once the demo reached ``step``."""

    step: str
    title: str
    nodes: Mapping[str, Expect]


@dataclass(frozen=True, slots=True)
class Mismatch:
    step: str
    node: str
    expected: Expect
    got: Expect

    def line(self) -> str:
        return (
            f"demo: FAILED: node {self.node}: expected {self.expected}, got {self.got} "
            f"(after step {self.step!r})"
        )


TRUSTED = Expect("trusted", ALL_PASSED)

# The story. debian-sb-1, debian-sb-tampered and debian-cloud-1 are real VM boots of Debian's
# current packages; gce-ubuntu-1 and thinkpad-1 are recorded logs of real machines replayed into
# swtpm. The kernel golden set has two versions built from the .debs before any VM boots: A (the
# generic kernel: debian-sb-1 and debian-sb-tampered boot it) and B (the cloud kernel:
# debian-cloud-1), B uploaded last — a rollout from A to B.
SCENARIO: tuple[Checkpoint, ...] = (
    Checkpoint(
        "attested",
        "every node enrolled and attested once; kernels A and B both active",
        {
            "debian-sb-1": TRUSTED,
            # its grub.cfg adds "nokaslr" to the kernel command line
            "debian-sb-tampered": Expect("untrusted", "cmdline_not_approved"),
            "debian-cloud-1": TRUSTED,
            "gce-ubuntu-1": TRUSTED,
            "thinkpad-1": TRUSTED,
        },
    ),
    Checkpoint(
        "revoked",
        "kernel A revoked (no node attested again)",
        {
            # flagged at once by re-appraisal of its stored evidence: its kernel is revoked
            "debian-sb-1": Expect("untrusted", "golden_revoked"),
            # the same kernel: the revocation is now the first failing check
            "debian-sb-tampered": Expect("untrusted", "golden_revoked"),
            "debian-cloud-1": TRUSTED,  # kernel B is still active
            "gce-ubuntu-1": TRUSTED,
            "thinkpad-1": TRUSTED,
        },
    ),
    Checkpoint(
        "rolled-forward",
        "debian-sb-1 rebooted into kernel B (the A/B partitions' other kernel) and attested",
        {
            "debian-sb-1": TRUSTED,
            "debian-sb-tampered": Expect("untrusted", "golden_revoked"),
            "debian-cloud-1": TRUSTED,
            "gce-ubuntu-1": TRUSTED,
            "thinkpad-1": TRUSTED,
        },
    ),
)

# Which nodes `nodes list --outdated` must name at each checkpoint (a node booting a revoked,
# retired or superseded version): read from the verified logs, never from labels.
OUTDATED: Mapping[str, frozenset[str]] = {
    "attested": frozenset({"debian-sb-1", "debian-sb-tampered"}),  # on A while B is active
    "revoked": frozenset({"debian-sb-1", "debian-sb-tampered"}),  # on A, now revoked
    "rolled-forward": frozenset({"debian-sb-tampered"}),
}


def compare_outdated(step: str, listed: Iterable[str]) -> list[Mismatch]:
    """Every node whose presence in the outdated list differs from the story at ``step``."""
    want, got = OUTDATED[step], set(listed)
    yes, no = Expect("outdated", "listed"), Expect("up-to-date", "not listed")
    return [
        Mismatch(step, name, yes if name in want else no, yes if name in got else no)
        for name in sorted(want ^ got)
    ]


def reason_code(reason: str | None) -> str:
    """The stable code at the head of the verifier's one-line reason (the whole text otherwise,
    so that an unexpected shape never equals an expected code)."""
    if not reason:
        return NO_REASON
    if _ALL.fullmatch(reason):
        return ALL_PASSED
    match = _CODE.match(reason)
    return match.group(1) if match else reason


def observed(inventory: Iterable[Mapping[str, Any]]) -> dict[str, Expect]:
    """name -> state/reason code, from the verifier's node list (``GET /v1/nodes``)."""
    return {
        str(n["name"]): Expect(str(n["state"]), reason_code(n.get("reason"))) for n in inventory
    }


def compare(checkpoint: Checkpoint, inventory: Iterable[Mapping[str, Any]]) -> list[Mismatch]:
    """Every node whose state or reason code differs from the checkpoint, including nodes the
    story names that the inventory lacks and nodes the inventory has that the story does not."""
    got = observed(inventory)
    absent = Expect(ABSENT, NO_REASON)
    return [
        Mismatch(checkpoint.step, name, checkpoint.nodes.get(name, absent), got.get(name, absent))
        for name in sorted(set(got) | set(checkpoint.nodes))
        if checkpoint.nodes.get(name, absent) != got.get(name, absent)
    ]


def checkpoint(step: str, scenario: Sequence[Checkpoint] = SCENARIO) -> Checkpoint:
    for c in scenario:
        if c.step == step:
            return c
    raise KeyError(f"the scenario has no step {step!r}")


def final(scenario: Sequence[Checkpoint] = SCENARIO) -> Checkpoint:
    """The last checkpoint: the final state and reason each node is expected to end in."""
    return scenario[-1]


# -- the cluster acts on verdicts: signed results offline, the scheduler extender ---------------
# After the "attested" checkpoint a relying party fetches each named node's EAR and checks it
# offline with `assay-verifier ear verify` (exit code and status), and the scheduler extender is
# asked about every node: the tampered node must fail it, the trusted ones pass.


@dataclass(frozen=True, slots=True)
class EarExpect:
    node: str
    exit_code: int
    status: str


EAR_CHECKS: tuple[EarExpect, ...] = (
    EarExpect("gce-ubuntu-1", 0, "affirming"),
    EarExpect("debian-sb-tampered", 1, "contraindicated"),
)
EXTENDER_FAILS = ("debian-sb-tampered",)
EXTENDER_PASSES = ("debian-sb-1", "debian-cloud-1", "gce-ubuntu-1", "thinkpad-1")


def compare_ear(expect: EarExpect, exit_code: int, result: Mapping[str, Any]) -> list[Mismatch]:
    """The offline check of ``expect.node``'s EAR must end as the story says."""
    want = Expect(f"exit {expect.exit_code}", expect.status)
    got = Expect(f"exit {exit_code}", str(result.get("status") or "refused"))
    if result.get("valid") is not True or result.get("node") != expect.node:
        got = Expect(f"exit {exit_code}", "invalid")
    return [] if want == got else [Mismatch("ear", expect.node, want, got)]


def compare_extender(result: Mapping[str, Any]) -> list[Mismatch]:
    """The extender's ExtenderFilterResult: the tampered node unresolvable, the trusted passed."""
    passed = set(result.get("NodeNames") or [])
    failed = set(result.get("FailedAndUnresolvableNodes") or {})
    out: list[Mismatch] = []
    for node in EXTENDER_FAILS:
        if node in passed or node not in failed:
            out.append(
                Mismatch(
                    "extender",
                    node,
                    Expect("filtered", "unresolvable"),
                    Expect("passed" if node in passed else "absent", NO_REASON),
                )
            )
    for node in EXTENDER_PASSES:
        if node not in passed:
            reason = str((result.get("FailedAndUnresolvableNodes") or {}).get(node, NO_REASON))
            out.append(
                Mismatch(
                    "extender",
                    node,
                    Expect("passed", NO_REASON),
                    Expect("filtered", reason_code(reason)),
                )
            )
    return out
