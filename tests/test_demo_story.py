"""The demo's self-check (scripts/_demo_story.py): a story that reality contradicts must fail,
naming the node, what was expected and what was got; a story that holds must pass. No VM here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


story = _load("_demo_story")


def _node(name: str, state: str, reason: str | None) -> dict[str, Any]:
    return {"name": name, "state": state, "reason": reason, "golden": ["x@1"]}


def _as_told(step: str) -> list[dict[str, Any]]:
    """The inventory the verifier gives when the story holds at ``step``."""
    reasons = {
        "all_checks_passed": "all 29 checks passed",
        "cmdline_not_approved": "cmdline_not_approved: PCR8 event 45 (EV_IPL): kernel command "
        "line is not approved",
        "golden_revoked": "golden_revoked: PCR4 event 43 (EV_EFI_BOOT_SERVICES_APPLICATION): "
        "linux-image-6.1.0-99-amd64 …: approved only by debian-kernel@6.1.0-99-amd64, revoked: …",
    }
    cp = story.checkpoint(step)
    return [_node(n, e.state, reasons[e.reason]) for n, e in cp.nodes.items()]


@pytest.mark.parametrize("step", [c.step for c in story.SCENARIO])
def test_an_inventory_that_tells_the_story_passes(step: str) -> None:
    assert story.compare(story.checkpoint(step), _as_told(step)) == []


def test_a_node_in_another_state_fails_naming_node_expected_and_got() -> None:
    inventory = _as_told("attested")
    for n in inventory:
        if n["name"] == "debian-sb-1":  # the defect that opened issue 15
            n["state"] = "untrusted"
            n["reason"] = "boot_app_not_approved: PCR4 event 43 (…): digest 6b1b… matches no …"
    (wrong,) = story.compare(story.checkpoint("attested"), inventory)
    assert (wrong.node, wrong.expected, wrong.got) == (
        "debian-sb-1",
        story.Expect("trusted", "all_checks_passed"),
        story.Expect("untrusted", "boot_app_not_approved"),
    )
    assert wrong.line().startswith(
        "demo: FAILED: node debian-sb-1: expected trusted/all_checks_passed, "
        "got untrusted/boot_app_not_approved"
    )


def test_the_right_state_with_another_reason_fails() -> None:
    inventory = _as_told("revoked")
    for n in inventory:
        if n["name"] == "debian-sb-1":  # revocation not explained: still untrusted, other code
            n["reason"] = "boot_app_not_approved: PCR4 event 43: matches no approved boot app"
    (wrong,) = story.compare(story.checkpoint("revoked"), inventory)
    assert wrong.node == "debian-sb-1"
    assert (wrong.expected.reason, wrong.got.reason) == (
        "golden_revoked",
        "boot_app_not_approved",
    )


def test_a_missing_node_and_an_unexpected_node_both_fail() -> None:
    inventory = [n for n in _as_told("attested") if n["name"] != "thinkpad-1"]
    inventory.append(_node("intruder", "trusted", "all 3 checks passed"))
    wrong = story.compare(story.checkpoint("attested"), inventory)
    assert {(m.node, str(m.expected), str(m.got)) for m in wrong} == {
        ("thinkpad-1", "trusted/all_checks_passed", "absent/-"),
        ("intruder", "absent/-", "trusted/all_checks_passed"),
    }


def test_stale_is_not_trusted() -> None:
    inventory = _as_told("attested")
    inventory[0] = _node(inventory[0]["name"], "stale", "no successful attestation since …")
    (wrong,) = story.compare(story.checkpoint("attested"), inventory)
    assert wrong.got.state == "stale"


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("all 23 checks passed", "all_checks_passed"),
        ("cmdline_not_approved: PCR8 event 45 (EV_IPL): not approved", "cmdline_not_approved"),
        (None, "-"),
        ("", "-"),
        # an unexpected shape is kept whole, so it can never equal an expected code
        ("enrolled; awaiting the first attestation", "enrolled; awaiting the first attestation"),
        ("all checks passed, honest", "all checks passed, honest"),
    ],
)
def test_reason_code_is_the_head_of_the_verifiers_reason(reason: str | None, code: str) -> None:
    assert story.reason_code(reason) == code


def test_the_scenario_states_codes_not_digests_or_versions() -> None:
    """It must keep holding after the next Debian kernel update."""
    for cp in story.SCENARIO:
        for expect in cp.nodes.values():
            assert expect.state in {"trusted", "untrusted", "unknown"}
            assert expect.reason.replace("_", "").isalpha(), expect.reason
    assert story.final() is story.SCENARIO[-1]
    with pytest.raises(KeyError):
        story.checkpoint("no-such-step")


# -- the demo's own wiring: exit codes and messages (no VM, no verifier: the inventory is faked)


@pytest.fixture(scope="module")
def demo_main() -> ModuleType:
    pytest.importorskip("tpm2_pytss")  # the VM machinery the demo imports; scripts/test has it
    return _load("_demo")


def _run(
    demo_main: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    step: str,
    nodes: list[dict[str, Any]],
) -> int:
    """The demo with one step, the story check at ``step``, over a faked inventory."""
    monkeypatch.setattr(demo_main, "inventory", lambda demo: nodes)
    check = (f"story check after {step}", lambda demo: demo_main.check_story(demo, step))
    code: int = demo_main.main(argv, steps=[check])
    return code


def test_demo_exits_1_naming_each_node_that_differs(
    demo_main: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = _as_told("attested")
    inventory[0] = _node("debian-sb-1", "untrusted", "boot_app_not_approved: PCR4 event 43: …")
    assert _run(demo_main, monkeypatch, ["--json"], "attested", inventory) == 1
    out, err = capsys.readouterr()
    assert (
        "demo: FAILED: node debian-sb-1: expected trusted/all_checks_passed, "
        "got untrusted/boot_app_not_approved"
    ) in err
    assert err.count("demo: FAILED:") == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert {n["name"]: n["expected"] for n in doc["nodes"]}["debian-sb-tampered"] == {
        "state": "untrusted",  # the final checkpoint's expectation (kernel A revoked)
        "reason": "golden_revoked",
    }
    assert {n["name"]: n["expected"] for n in doc["nodes"]}["debian-sb-1"] == {
        "state": "trusted",  # rolled forward to kernel B
        "reason": "all_checks_passed",
    }
    assert {"name", "state", "reason", "golden", "expected"} <= set(doc["nodes"][0])
    assert "events" in doc


def test_demo_exits_0_when_every_checkpoint_holds(
    demo_main: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(demo_main, monkeypatch, [], "attested", _as_told("attested")) == 0
    out, err = capsys.readouterr()
    assert "FAILED" not in out + err
    assert "The story held" in out


def test_a_failing_step_exits_2_naming_the_step_runs_no_later_step_and_cleans_up(
    demo_main: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Path] = []

    def boom(demo: Any) -> None:
        seen.append(demo.work)
        raise demo_main.DemoError("`golden from-deb` failed (exit 2): no such file")

    def later(demo: Any) -> None:
        raise AssertionError("ran after a failed step")

    code = demo_main.main([], steps=[("Golden sets", boom), ("Later", later)])
    _, err = capsys.readouterr()
    assert code == 2
    assert 'demo: step 1/2 "Golden sets" failed: `golden from-deb` failed (exit 2)' in err
    assert "Later" not in err
    assert seen and not seen[0].exists()  # the work directory is removed


def test_an_unexpected_error_in_a_step_also_names_its_kind(
    demo_main: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(demo: Any) -> None:
        raise KeyError("debian-kernel")

    assert demo_main.main([], steps=[("Revoking", broken)]) == 2
    assert "step 1/1 \"Revoking\" failed: KeyError: 'debian-kernel'" in capsys.readouterr().err


def test_the_outdated_list_is_compared_both_ways() -> None:
    assert story.compare_outdated("rolled-forward", ["debian-sb-tampered"]) == []
    wrong = story.compare_outdated("rolled-forward", ["debian-sb-1"])
    assert [m.line() for m in wrong] == [
        "demo: FAILED: node debian-sb-1: expected up-to-date/not listed, got outdated/listed "
        "(after step 'rolled-forward')",
        "demo: FAILED: node debian-sb-tampered: expected outdated/listed, got up-to-date/not "
        "listed (after step 'rolled-forward')",
    ]


# --- the cluster checks: EAR verified offline, the extender's filter ------------------------


def _ear_result(node: str, status: str) -> dict[str, Any]:
    return {"valid": True, "node": node, "status": status, "affirming": status == "affirming"}


def test_ear_checks_that_hold_pass() -> None:
    for e in story.EAR_CHECKS:
        assert story.compare_ear(e, e.exit_code, _ear_result(e.node, e.status)) == []


def test_an_ear_that_verifies_differently_fails_naming_the_node() -> None:
    trusted = next(e for e in story.EAR_CHECKS if e.exit_code == 0)
    (wrong,) = story.compare_ear(trusted, 1, _ear_result(trusted.node, "none"))
    assert wrong.node == trusted.node and "exit 0" in wrong.line() and "exit 1" in wrong.line()


def test_an_ear_refused_or_about_another_node_fails() -> None:
    e = story.EAR_CHECKS[0]
    refused = {"valid": False, "affirming": False, "error": {"code": "ear_bad_signature"}}
    assert story.compare_ear(e, 1, refused)
    assert story.compare_ear(e, 0, _ear_result("someone-else", "affirming"))


def _filter(passed: list[str], failed: list[str]) -> dict[str, Any]:
    return {
        "NodeNames": passed,
        "FailedAndUnresolvableNodes": {n: "untrusted: cmdline_not_approved: …" for n in failed},
        "FailedNodes": {},
        "Error": "",
    }


def test_an_extender_result_that_tells_the_story_passes() -> None:
    result = _filter(list(story.EXTENDER_PASSES), list(story.EXTENDER_FAILS))
    assert story.compare_extender(result) == []


def test_a_tampered_node_passing_the_extender_fails_the_story() -> None:
    result = _filter([*story.EXTENDER_PASSES, *story.EXTENDER_FAILS], [])
    (wrong,) = story.compare_extender(result)
    assert wrong.node == "debian-sb-tampered" and "passed" in wrong.line()


def test_a_trusted_node_filtered_out_fails_the_story() -> None:
    passes = list(story.EXTENDER_PASSES)
    result = _filter(passes[1:], [*story.EXTENDER_FAILS, passes[0]])
    (wrong,) = story.compare_extender(result)
    assert wrong.node == passes[0]
