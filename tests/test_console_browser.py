"""The review console in a real browser: Debian's chromium driven by Playwright, against a real
gunicorn verifier with swtpm nodes booted from the real corpus log (``console_fleet``).

Each test looks at the page as a person would (the DOM, not the HTML source) and records every
dialog, console error and page error: a hostile string that ran, or a CSP violation, fails the test.
A screenshot of each main page is saved at 1280×800 into ``$ASSAY_UI_SHOTS`` (``docs/ui/`` to
refresh the committed set) or a temporary directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from .console_fleet import HOSTILE_LABEL, HOSTILE_PATH, Fleet, kernel_index, start_fleet

pytestmark = [pytest.mark.swtpm, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # A long attest interval: re-appraised nodes must not turn stale while the tests run.
    yield from start_fleet(tmp_path_factory.mktemp("console"), attest_interval=3600.0)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("ASSAY_UI_SHOTS")
    path = Path(wanted) if wanted else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Person:
    """One browser (its own fresh profile) signed in as one token."""

    context: BrowserContext
    page: Page
    url: str
    problems: list[str] = field(default_factory=list)

    def go(self, path: str) -> Page:
        resp = self.page.goto(self.url + path)
        assert resp is not None
        csp = resp.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
        assert resp.headers.get("x-frame-options") == "DENY"
        assert "no-store" in resp.headers.get("cache-control", "")
        return self.page

    def shot(self, shots: Path, name: str) -> None:
        self.page.screenshot(path=str(shots / f"{name}.png"))

    def clean(self, *refusals: int) -> None:
        """No dialog, no script or CSP error; chromium also logs a page answered with an error
        status, which the tests that expect a refusal page name."""
        expected = {f"status of {s} " for s in refusals}
        left = [p for p in self.problems if not any(e in p for e in expected)]
        assert left == [], left


def open_browser(pw: Playwright, url: str) -> Person:
    context = pw.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="assay-chromium-"),
        executable_path=CHROMIUM,
        headless=True,
        args=ARGS,
        viewport={"width": 1280, "height": 800},
        accept_downloads=True,
    )
    page = context.new_page()
    person = Person(context, page, url)
    page.on("dialog", lambda d: (person.problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on(
        "console",
        lambda m: (
            person.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: person.problems.append(f"page error: {e}"))
    return person


def sign_in(pw: Playwright, fleet: Fleet, role: str) -> Person:
    person = open_browser(pw, fleet.url)
    page = person.go("/ui/")
    assert page.url.startswith(fleet.url + "/ui/signin")
    page.fill("#token", fleet.tokens[role])
    page.click("button:has-text('Sign in')")
    return person


@pytest.fixture(scope="module")
def admin(playwright: Playwright, fleet: Fleet) -> Iterator[Person]:
    person = sign_in(playwright, fleet, "admin")
    yield person
    person.context.close()


@pytest.fixture(scope="module")
def reviewer(playwright: Playwright, fleet: Fleet) -> Iterator[Person]:
    person = sign_in(playwright, fleet, "reviewer")
    yield person
    person.context.close()


def last_attestation(fleet: Fleet, node: str) -> str:
    return str(fleet.api(f"/v1/nodes/{node}").json()["last_attestation_id"])


def test_sign_in_and_sign_out(playwright: Playwright, fleet: Fleet, shots: Path) -> None:
    person = open_browser(playwright, fleet.url)
    page = person.go("/ui/nodes")
    assert "/ui/signin" in page.url
    person.shot(shots, "signin")
    page.fill("#token", fleet.tokens["reviewer"])
    page.click("button:has-text('Sign in')")
    assert page.url.endswith("/ui/nodes")  # back where the person was going
    assert page.locator("h1").inner_text() == "Nodes"
    cookie = next(c for c in person.context.cookies() if c["name"] == "assay_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert fleet.tokens["reviewer"] not in json.dumps(person.context.cookies())
    page.click("button:has-text('Sign out')")
    assert "signed out" in page.locator("main").inner_text()
    person.go("/ui/")
    assert "/ui/signin" in page.url
    person.clean()
    person.context.close()


def test_a_scheduler_token_is_refused_with_a_clear_page(
    playwright: Playwright, fleet: Fleet
) -> None:
    person = sign_in(playwright, fleet, "scheduler")
    text = person.page.locator("main").inner_text()
    assert "403" in text and "role_not_allowed" in text and "reviewer or admin" in text
    assert not any(c["name"] == "assay_console" for c in person.context.cookies())
    person.clean(403)
    person.context.close()


def test_the_overview_draws_the_failures_as_a_chart(
    reviewer: Person, fleet: Fleet, shots: Path
) -> None:
    page = reviewer.go("/ui/")
    assert page.locator("svg.chart rect.bar-untrusted").count() == 24
    desc = page.locator("svg.chart desc").text_content() or ""
    assert desc.startswith("2 failed attestations")
    assert page.locator(".count.c-untrusted .n").inner_text() == "2"
    reviewer.shot(shots, "overview")
    reviewer.clean()


def test_tampered_attestation_highlights_exactly_the_offending_event(
    reviewer: Person, fleet: Fleet, shots: Path
) -> None:
    att = last_attestation(fleet, "bad-2")
    page = reviewer.go(f"/ui/attestations/{att}")
    first = page.locator("table.checks tbody tr").first
    assert first.locator("td").nth(0).inner_text().endswith("fail")
    assert "boot.app" in first.inner_text() and "boot_app_not_approved" in first.inner_text()
    k = kernel_index(fleet.log)
    assert first.locator(f"a[href='#ev-{k}']").count() == 1  # the check links to its event
    offending = page.locator("table.events tr.offending")
    assert offending.count() == 1 and offending.get_attribute("id") == f"ev-{k}"
    reviewer.shot(shots, "attestation")
    page.locator(f"#ev-{k}").scroll_into_view_if_needed()
    reviewer.shot(shots, "attestation-events")
    reviewer.clean()


def test_the_boot_diff_shows_the_changed_kernel(reviewer: Person, fleet: Fleet) -> None:
    page = reviewer.go(f"/ui/attestations/{last_attestation(fleet, 'bad-1')}")
    rows = page.locator("table.diff tr.d-changed")
    assert rows.count() == 1 and "EV_EFI_BOOT_SERVICES_APPLICATION" in rows.first.inner_text()
    reviewer.clean()


def test_downloads_are_byte_identical_to_the_stored_evidence(
    reviewer: Person, fleet: Fleet
) -> None:
    att = last_attestation(fleet, "bad-2")
    page = reviewer.go(f"/ui/attestations/{att}")
    got = {}
    for label in ("evidence bundle", "event log", "verdict"):
        with page.expect_download() as info:
            page.click(f"nav.downloads a:has-text('{label}')")
        got[label] = Path(info.value.path()).read_bytes()
    assert got["evidence bundle"] == fleet.api(f"/v1/attestations/{att}/evidence").content
    assert got["event log"] == fleet.bad_log
    assert json.loads(got["verdict"]) == fleet.api(f"/v1/attestations/{att}").json()
    reviewer.clean()


def test_hostile_labels_and_event_strings_render_as_text(
    reviewer: Person, fleet: Fleet, shots: Path
) -> None:
    page = reviewer.go("/ui/nodes/bad-2")
    labels = page.locator("main .label").all_inner_texts()
    assert f"owner={HOSTILE_LABEL}" in labels
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    reviewer.shot(shots, "node")
    page = reviewer.go(f"/ui/attestations/{last_attestation(fleet, 'bad-2')}")
    desc = page.locator(f"#ev-{kernel_index(fleet.log)} td.desc").inner_text()
    assert HOSTILE_PATH in desc
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    page = reviewer.go("/ui/nodes?search=bad")
    assert page.locator("main img").count() == 0
    reviewer.shot(shots, "nodes")
    reviewer.clean()  # no dialog, no console error (a CSP violation would be one)


def test_a_post_without_the_csrf_token_is_refused(admin: Person, fleet: Fleet) -> None:
    cookie = next(c for c in admin.context.cookies() if c["name"] == "assay_console")
    resp = requests.post(
        f"{fleet.url}/ui/nodes/good-1/quarantine",
        data={"reason": "forged"},
        cookies={"assay_console": cookie["value"]},
        timeout=30,
        allow_redirects=False,
    )
    assert resp.status_code == 403 and "csrf_failed" in resp.text
    assert fleet.api("/v1/nodes/good-1").json()["state"] == "trusted"


def test_quarantine_with_a_reason_changes_the_state_and_is_audited(
    admin: Person, fleet: Fleet
) -> None:
    page = admin.go("/ui/nodes/good-1")
    page.fill("#r-quarantine", "suspicious reboot loop")
    page.click("button:has-text('Quarantine')")
    assert "quarantined" in page.locator("h1").inner_text()
    assert fleet.api("/v1/nodes/good-1").json()["state"] == "quarantined"
    audit = fleet.api("/v1/audit?target=good-1").json()["audit"]
    entry = next(e for e in audit if e["action"] == "quarantine")
    assert entry["reason"] == "suspicious reboot loop" and "(admin)" in entry["actor"]
    assert "suspicious reboot loop" in page.locator("ol.timeline").inner_text()
    page.fill("#r-release", "checked the host")
    page.click("button:has-text('Release')")
    assert fleet.api("/v1/nodes/good-1").json()["state"] == "trusted"
    admin.clean()


def test_two_nodes_with_the_same_unknown_boot_application_form_one_incident(
    reviewer: Person, fleet: Fleet, shots: Path
) -> None:
    page = reviewer.go("/ui/incidents")
    row = page.locator("tbody tr", has_text="booted the same unknown boot application")
    assert row.count() == 1 and "2 nodes" in row.inner_text()
    reviewer.shot(shots, "incidents")
    row.locator("a").first.click()
    members = page.locator("section[aria-labelledby=nodes-h] tbody tr td:first-child")
    assert members.all_inner_texts() == ["bad-1", "bad-2"]
    page.select_option("#t-state", "acknowledged")
    page.fill("#t-assignee", "alice")
    page.fill("#r-triage", "looking into the new kernel")
    page.click("button:has-text('Update')")
    assert "acknowledged" in page.locator("h1").inner_text()
    reviewer.shot(shots, "incident")
    reviewer.clean()


def test_promotion_needs_a_second_person_then_the_nodes_are_trusted(
    admin: Person, reviewer: Person, fleet: Fleet, shots: Path
) -> None:
    att = last_attestation(fleet, "bad-2")
    page = admin.go(f"/ui/attestations/{att}")
    page.click("a:has-text('Promote reviewed measurements')")
    k = kernel_index(fleet.log)
    page.check(f"#ev-{k}")
    page.fill("#r-promote", "reviewed the 6.1.0-30 kernel build")
    admin.shot(shots, "promote")
    page.click("button:has-text('Draft the new version')")
    assert (
        "fleet@2" in page.locator("h1").inner_text() and "draft" in page.locator("h1").inner_text()
    )
    draft_url = page.url
    page.fill("#r-approve", "my own work")
    page.click("button:has-text('Approve')")
    text = page.locator("main").inner_text()
    assert "403" in text and "four_eyes" in text
    assert fleet.api("/v1/nodes/bad-2").json()["state"] == "untrusted"
    # A token the drafter made for themselves is no second person either.
    made = fleet.post("/v1/tokens", {"role": "reviewer", "ttl": 600}).json()["token"]
    draft_id = draft_url.rsplit("/", 1)[1]
    resp = requests.post(
        f"{fleet.url}/v1/drafts/{draft_id}/approve",
        json={"reason": "sock puppet"},
        headers={"Authorization": f"Bearer {made}"},
        timeout=30,
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "four_eyes"
    page = reviewer.go(draft_url.removeprefix(fleet.url))
    page.fill("#r-approve", "second pair of eyes: matches the vendor build")
    page.click("button:has-text('Approve')")
    assert "approved" in page.locator("h1").inner_text()
    reviewer.shot(shots, "draft")
    for node in ("bad-1", "bad-2"):
        shown = fleet.api(f"/v1/nodes/{node}").json()
        assert shown["state"] == "trusted", shown
        assert "fleet@2" in shown["golden"]
    page = reviewer.go("/ui/golden")
    assert "fleet@2" in page.locator("main").inner_text()
    reviewer.shot(shots, "golden")
    admin.clean(403)
    reviewer.clean()
