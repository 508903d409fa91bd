"""What the review console shows, as typed results built from the domain functions: the fleet
overview, the node list (filter, search, sort, pages), a node's timeline, an attestation with its
checks, decoded event log, boot diff and quote facts, and the golden versions.

Everything a node sent (its log's strings, its labels) is carried here as plain text: escaping
is the page's job, always (Jinja2 autoescape, no ``|safe`` on node data).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.errors import MalformedEvidence
from assay.eventlog import Event, EventLog
from assay.tpm2 import parse_attest
from verifier.appraisal import appraise, compile_golden
from verifier.store import console as store_console
from verifier.store import repo
from verifier.store.models import DraftState, NodeState

from . import incidents, inventory, stored_log
from .attestation import find_attestation
from .audit import AuditView
from .context import Services
from .errors import BadRequest
from .golden_ops import GoldenView, list_sets
from .golden_policy import golden_from_row
from .incidents import IncidentView
from .inventory import AttestationDetail, AttestationView, NodeView
from .rollout import Standing

SORTS = ("name", "state", "state_since", "last_attested_at", "reason")
PER_PAGE = (25, 50, 100, 200)
INACTIVE_REASONS = ("golden_revoked", "boot_app_revoked", "boot_app_retired")
_CODE = re.compile(r"^([a-z][a-z0-9_]*):")


def reason_code(reason: str) -> str:
    """The stable code a node's reason starts with (``boot_app_not_approved: …``), or ''."""
    m = _CODE.match(reason)
    return m.group(1) if m else ""


# --- fleet overview -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HourBucket:
    start: dt.datetime
    untrusted: int
    unknown: int

    @property
    def total(self) -> int:
        return self.untrusted + self.unknown


@dataclass(frozen=True, slots=True)
class InactiveUse:
    """A node whose last verdict rests on (or failed for) a retired or revoked golden version."""

    node: str
    state: NodeState
    versions: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Overview:
    now: dt.datetime
    counts: Mapping[str, int]
    total: int
    hours: tuple[HourBucket, ...]
    inactive: tuple[InactiveUse, ...]
    stale: tuple[NodeView, ...]
    incidents: tuple[IncidentView, ...]
    drafts_pending: int


def overview(svc: Services) -> Overview:
    now = svc.now()
    nodes = all_nodes(svc)
    counts = Counter(str(n.state) for n in nodes)
    listing = list_sets(svc)
    status = {f"{g.name}@{g.version}": g.status for g in listing.golden}
    inactive = tuple(_inactive(nodes, status))
    with svc.store.read() as db:
        since = _hour(now) - dt.timedelta(hours=23)
        rows = store_console.failures_since(db, since)
        pending = len(store_console.list_drafts(db, state=DraftState.DRAFT))
    open_incidents = [
        i for i in incidents.list_incidents(svc) if i.state in ("new", "acknowledged")
    ][:8]
    return Overview(
        now,
        {s.value: counts.get(s.value, 0) for s in NodeState},
        len(nodes),
        _buckets(since, rows),
        inactive,
        tuple(n for n in nodes if n.state == NodeState.STALE),
        tuple(open_incidents),
        pending,
    )


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _buckets(since: dt.datetime, rows: Iterable[tuple[dt.datetime, str]]) -> tuple[HourBucket, ...]:
    counts: dict[int, Counter[str]] = {h: Counter() for h in range(24)}
    for t, status in rows:
        h = int((t - since).total_seconds() // 3600)
        if 0 <= h < 24:
            counts[h][status] += 1
    return tuple(
        HourBucket(since + dt.timedelta(hours=h), c["untrusted"], c["unknown"])
        for h, c in counts.items()
    )


def _inactive(nodes: Sequence[NodeView], status: Mapping[str, str]) -> Iterable[InactiveUse]:
    """Nodes that booted a revoked or retired version (``NodeView.outdated``), or whose verdict
    failed for one, or that still appraise against one."""
    for n in nodes:
        gone = [o.version for o in n.outdated if o.why in ("revoked", "retired")]
        gone += [v for v in n.golden if status.get(v) in ("retired", "revoked")]
        dead = tuple(dict.fromkeys(gone))
        if dead or reason_code(n.reason) in INACTIVE_REASONS:
            yield InactiveUse(n.name, n.state, dead, n.reason)


# --- node list ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeQuery:
    state: NodeState | None = None
    label: tuple[str, str] | None = None
    golden: str = ""
    reason: str = ""
    search: str = ""
    sort: str = "name"
    descending: bool = False
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True, slots=True)
class NodeListPage:
    query: NodeQuery
    nodes: tuple[NodeView, ...]
    total: int
    pages: int
    labels: tuple[tuple[str, str], ...]
    golden: tuple[str, ...]
    reasons: tuple[str, ...]


def node_query(args: Mapping[str, str]) -> NodeQuery:
    """A NodeQuery from query parameters (all optional); BadRequest ``bad_query`` when malformed."""
    state = inventory.parse_state(args["state"]) if args.get("state") else None
    label = None
    if args.get("label"):
        k, sep, v = args["label"].partition("=")
        if not sep or not k:
            raise BadRequest("bad_query", "label must be key=value")
        label = (k, v)
    sort = args.get("sort") or "name"
    if sort not in SORTS:
        raise BadRequest("bad_query", f"sort must be one of {', '.join(SORTS)}")
    page = _int(args.get("page"), 1, 1, 1_000_000, "page")
    per_page = _int(args.get("per_page"), 50, 1, max(PER_PAGE), "per_page")
    texts = {k: args.get(k, "") for k in ("golden", "reason", "search")}
    for k, v in texts.items():
        if len(v) > 300 or not v.isprintable():
            raise BadRequest("bad_query", f"{k} must be printable text of at most 300 characters")
    return NodeQuery(
        state, label, texts["golden"], texts["reason"], texts["search"].strip(), sort,
        args.get("order") == "desc", page, per_page,
    )  # fmt: skip


def _int(text: str | None, default: int, lo: int, hi: int, name: str) -> int:
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise BadRequest("bad_query", f"{name} must be an integer {lo}..{hi}")
    return int(text)


@dataclass(frozen=True, slots=True)
class _Listed:
    """A node row with its state as of now: what the list filters and sorts on."""

    row: Any
    state: NodeState
    reason: str


def _matches(n: _Listed, q: NodeQuery) -> bool:
    row = n.row
    if q.state is not None and n.state != q.state:
        return False
    if q.label is not None and row.labels.get(q.label[0]) != q.label[1]:
        return False
    if q.golden and not any(
        g == q.golden or g.split("@")[0] == q.golden for g in row.golden_versions
    ):
        return False
    if q.reason and reason_code(n.reason) != q.reason:
        return False
    return not q.search or q.search.lower() in row.name


def _sort_key(sort: str) -> Any:
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    if sort == "state":
        return lambda n: (str(n.state), n.row.name)
    if sort == "state_since":
        return lambda n: (n.row.state_since, n.row.name)
    if sort == "last_attested_at":
        return lambda n: (n.row.last_attested_at or epoch, n.row.name)
    if sort == "reason":
        return lambda n: (n.reason, n.row.name)
    return lambda n: n.row.name


def all_nodes(svc: Services) -> list[NodeView]:
    """Every node's view as of now (light rows: the same views as ``inventory.list_nodes``)."""
    now, window = svc.now(), svc.config.freshness_window
    with svc.store.read() as db:
        standing = Standing(repo.list_golden(db))
        return [NodeView.of(row, now, window, standing) for row in store_console.node_rows(db)]


def node_list(svc: Services, q: NodeQuery) -> NodeListPage:
    """One page of the filtered, sorted node list. Filters and sorting run over light rows (each
    node's state computed as of now, as ``NodeView`` does); views are built for the page only."""
    now, window = svc.now(), svc.config.freshness_window
    with svc.store.read() as db:
        rows = store_console.node_list_rows(db, q.sort)
        listed = [_Listed(r, *inventory.effective_state(r, now, window)) for r in rows]
        found = [n for n in listed if _matches(n, q)]
        if q.sort != "name" or q.descending:
            found.sort(key=_sort_key(q.sort), reverse=q.descending)
        pages = max(1, math.ceil(len(found) / q.per_page))
        start = (min(q.page, pages) - 1) * q.per_page
        names = [n.row.name for n in found[start : start + q.per_page]]
        full = {r.name: r for r in store_console.node_rows(db, names)}
        standing = Standing(repo.list_golden(db))
    shown = tuple(NodeView.of(full[n], now, window, standing) for n in names if n in full)
    labels = sorted({(k, v) for r in rows for k, v in r.labels.items()})[:200]
    golden = sorted({g for r in rows for g in r.golden_versions})
    reasons = sorted({c for n in listed if (c := reason_code(n.reason))})
    return NodeListPage(q, shown, len(found), pages, tuple(labels), tuple(golden), tuple(reasons))


# --- node page ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: dt.datetime
    kind: str
    """``attestation``, ``boot``, ``state`` or ``action``."""
    title: str
    detail: str = ""
    attestation_id: int | None = None
    status: str = ""


@dataclass(frozen=True, slots=True)
class NodeDetail:
    node: NodeView
    golden: tuple[GoldenView, ...]
    timeline: tuple[TimelineEntry, ...]
    incidents: tuple[IncidentView, ...]


def node_detail(svc: Services, name: str, *, limit: int = 100) -> NodeDetail:
    node = inventory.show_node(svc, name)
    history = inventory.node_history(svc, name, limit=limit)
    listing = list_sets(svc)
    assigned = {a.name for a in listing.assignments if _selects(a.selector, node.labels)}
    golden = tuple(g for g in listing.golden if g.name in assigned)
    mine = incidents.of_node(svc, name)
    with svc.store.read() as db:
        targets = [name, *(incidents.target(i.id) for i in mine)]
        audit = [AuditView.of(e) for e in store_console.audit_about(db, targets, limit)]
    timeline = sorted(
        [*_attestation_entries(history), *_audit_entries(audit)], key=lambda e: e.at, reverse=True
    )
    return NodeDetail(node, golden, tuple(timeline[: 2 * limit]), tuple(mine))


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return repo.selector_matches(selector, labels)


def _attestation_entries(history: Sequence[AttestationView]) -> Iterable[TimelineEntry]:
    ordered = list(reversed(history))  # oldest first
    for prev, a in zip([None, *ordered], ordered, strict=False):
        yield TimelineEntry(a.time, "attestation", str(a.source), a.reason, a.id, str(a.status))
        if a.reboot:
            yield TimelineEntry(a.time, "boot", f"reboot (TPM reset counter {a.reset_count})")
        if prev is not None and prev.status != a.status:
            yield TimelineEntry(a.time, "state", f"{prev.status} → {a.status}", "", a.id)


def _audit_entries(audit: Sequence[AuditView]) -> Iterable[TimelineEntry]:
    for e in audit:
        detail = e.reason + (f" ({e.target})" if e.target.startswith("incident:") else "")
        yield TimelineEntry(e.at, "action", f"{e.action} by {e.actor}", detail)


# --- attestation page -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    index: int
    pcr: int
    type_name: str
    digest: str
    description: str
    size: int
    checks: tuple[str, ...] = ()
    """Ids of the failing checks that name this event: the row is highlighted."""


@dataclass(frozen=True, slots=True)
class BootDiff:
    base_id: int
    same_log: bool
    added: tuple[EventRow, ...] = ()
    removed: tuple[EventRow, ...] = ()
    changed: tuple[tuple[EventRow, EventRow], ...] = ()


@dataclass(frozen=True, slots=True)
class QuoteFacts:
    reset_count: int
    restart_count: int
    clock: int
    safe: bool
    firmware_version: int


@dataclass(frozen=True, slots=True)
class AttestationPage:
    detail: AttestationDetail
    checks: tuple[Mapping[str, Any], ...]
    """Every check, failing first, then unknown, then passing."""
    missing: tuple[Mapping[str, Any], ...]
    """Failing checks about something the log never measured (no event to point at)."""
    events: tuple[EventRow, ...]
    pcrs_in_log: tuple[int, ...]
    log_problem: str
    verified: bool
    diff: BootDiff | None
    quote: QuoteFacts | None
    incidents: tuple[IncidentView, ...] = field(default=())


_ORDER = {"fail": 0, "unknown": 1, "pass": 2}


def attestation_page(svc: Services, attestation_id: str) -> AttestationPage:
    detail = inventory.attestation(svc, attestation_id)
    checks = [c for c in detail.verdict.get("checks", []) if isinstance(c, dict)]
    checks.sort(key=lambda c: _ORDER.get(str(c.get("status")), 3))
    failing: dict[int, list[str]] = {}
    for c in checks:
        if c.get("status") != "pass" and isinstance(c.get("event"), int):
            failing.setdefault(int(c["event"]), []).append(str(c.get("id")))
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        log = stored_log.load(svc, db, row, node)
        base = store_console.last_trusted_before(db, node.id, row.id)
        base_log = stored_log.load(svc, db, base, node).parsed if base is not None else None
        base_hex = base.event_log_sha256 if base is not None else None
        base_id = base.id if base is not None else None
    bank = svc.config.hash_alg
    rows = _event_rows(log.parsed, bank, failing) if log.parsed else ()
    diff = None
    if base_id is not None:
        same = base_hex == row.event_log_sha256
        diff = BootDiff(base_id, True) if same else _diff(base_log, log.parsed, bank, base_id)
    return AttestationPage(
        detail,
        tuple(checks),
        tuple(c for c in checks if c.get("status") != "pass" and c.get("event") is None),
        rows,
        tuple(sorted({r.pcr for r in rows})),
        log.problem,
        log.verified is not None,
        diff,
        _quote_facts(row.quote),
        tuple(incidents.of_attestation(svc, row.id)),
    )


def _event_rows(log: EventLog, bank: Any, failing: Mapping[int, list[str]]) -> tuple[EventRow, ...]:
    return tuple(_row(e, bank, failing.get(e.index, ())) for e in log.events)


def _row(e: Event, bank: Any, checks: Sequence[str]) -> EventRow:
    digest = e.digests.get(bank)
    try:
        description = str(e.decode().describe())
    except (MalformedEvidence, ValueError, UnicodeError) as exc:
        description = f"(undecodable: {exc})"
    return EventRow(
        e.index,
        e.pcr,
        e.type_name,
        digest.hex() if digest is not None else "",
        description,
        len(e.data),
        tuple(checks),
    )


def _diff(old: EventLog | None, new: EventLog | None, bank: Any, base_id: int) -> BootDiff:
    if old is None or new is None:
        return BootDiff(base_id, False)
    added: list[EventRow] = []
    removed: list[EventRow] = []
    changed: list[tuple[EventRow, EventRow]] = []
    for pcr in sorted({e.pcr for e in (*old.events, *new.events)}):
        a = [e for e in old.events if e.pcr == pcr]
        b = [e for e in new.events if e.pcr == pcr]
        keys_a = [(e.event_type, e.digests.get(bank)) for e in a]
        keys_b = [(e.event_type, e.digests.get(bank)) for e in b]
        sm = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            olds = [_row(e, bank, ()) for e in a[i1:i2]]
            news = [_row(e, bank, ()) for e in b[j1:j2]]
            if op == "replace":
                changed += list(zip(olds, news, strict=False))
                removed += olds[len(news) :]
                added += news[len(olds) :]
            elif op == "delete":
                removed += olds
            elif op == "insert":
                added += news
    return BootDiff(base_id, False, tuple(added), tuple(removed), tuple(changed))


def _quote_facts(quote: bytes) -> QuoteFacts | None:
    """The clock facts of the stored quote (as the AK signed them; the quote verified when it was
    recorded and is verified again for the page's *verified* mark)."""
    try:
        att = parse_attest(quote)
    except MalformedEvidence:
        return None
    ci = att.clock_info
    return QuoteFacts(ci.reset_count, ci.restart_count, ci.clock, ci.safe, att.firmware_version)


# --- golden ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoldenEntry:
    golden: GoldenView
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WouldAccept:
    ref: str
    status: str
    verdict: str
    reason: str


def golden_overview(svc: Services) -> tuple[GoldenEntry, ...]:
    listing = list_sets(svc)
    nodes = inventory.list_nodes(svc, state=None, labels={})
    out = []
    for g in listing.golden:
        selectors = [a.selector for a in listing.assignments if a.name == g.name]
        using = tuple(n.name for n in nodes if any(_selects(s, n.labels) for s in selectors))
        out.append(GoldenEntry(g, using))
    return tuple(out)


def would_accept(svc: Services, attestation_id: str) -> tuple[WouldAccept, ...]:
    """Each stored version of the node's golden sets judged alone against the attestation's
    verified log: which one would accept it (only versions in force can)."""
    now = svc.now()
    with svc.store.read() as db:
        row, node = find_attestation(db, attestation_id)
        log = stored_log.load(svc, db, row, node)
        versions = repo.golden_rows_for(db, node.labels)
    if log.verified is None:
        raise BadRequest("evidence_unverifiable", log.problem)
    out = []
    for r in versions:
        verdict = appraise(log.verified, compile_golden([golden_from_row(r)], now=now))
        out.append(
            WouldAccept(f"{r.name}@{r.version}", r.status, str(verdict.status), verdict.reason)
        )
    return tuple(out)
