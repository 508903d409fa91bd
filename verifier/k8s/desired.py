"""What a Kubernetes Node should carry for its Assay standing, and the patches that get it there.

Pure functions over plain JSON (the Node as the API returns it). The controller owns exactly
these keys and never touches any other label, annotation, taint or condition:

- labels ``assay.io/trusted`` (``true`` only for an affirming, fresh result) and ``assay.io/golden``;
- annotations ``assay.io/ear`` (the signed EAR; a hint for relying parties, which verify it) and
  ``assay.io/state``;
- taints ``assay.io/untrusted`` (untrusted, unknown, stale, quarantined; ``NoExecute`` by
  default) and ``assay.io/unattested:NoSchedule`` (a node Assay has not affirmed yet: kubelets
  register with it, the controller adds it to nodes Assay does not know, and it is removed only
  by the first affirming result);
- the condition ``AssayAttested`` (True / False / Unknown, with reason and message).

An unreachable verifier whose last result has expired never leaves a node looking trusted: its
label becomes ``false``, its condition Unknown, and it gets ``assay.io/untrusted`` with the
``unreachable_effect`` (``NoSchedule`` by default, so a verifier outage stops new placements
without evicting running pods); an existing taint is never weakened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PREFIX = "assay.io/"
LABEL_TRUSTED = "assay.io/trusted"
LABEL_GOLDEN = "assay.io/golden"
ANN_EAR = "assay.io/ear"
ANN_STATE = "assay.io/state"
TAINT_UNTRUSTED = "assay.io/untrusted"
TAINT_UNATTESTED = "assay.io/unattested"
CONDITION = "AssayAttested"
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

ABSENT = "absent"
"""Assay has no record of the node."""
UNREACHABLE = "unreachable"
"""The verifier could not be asked and the last result expired."""
NEEDS_TAINT = frozenset({"untrusted", "unknown", "stale", "quarantined", UNREACHABLE})
UNATTESTED = frozenset({"enrolled", ABSENT})

_REASONS = {
    "trusted": ("True", "Attested"),
    "untrusted": ("False", "Untrusted"),
    "quarantined": ("False", "Quarantined"),
    "unknown": ("Unknown", "VerdictUnknown"),
    "stale": ("Unknown", "Stale"),
    "enrolled": ("Unknown", "NotAttested"),
    ABSENT: ("Unknown", "NotEnrolled"),
    UNREACHABLE: ("Unknown", "VerifierUnreachable"),
}
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Standing:
    """A node's standing as the controller acts on it (from a verified EAR, or its absence)."""

    state: str
    reason: str = ""
    golden: tuple[str, ...] = ()
    ear: str | None = None
    ear_exp: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    untrusted_effect: str = "NoExecute"
    unreachable_effect: str = "NoSchedule"
    owned_labels: tuple[str, ...] = field(default=(LABEL_TRUSTED, LABEL_GOLDEN))


def golden_label(golden: Sequence[str]) -> str | None:
    """A label value (≤ 63 of ``[A-Za-z0-9._-]``, alphanumeric ends) naming the first golden
    version; ``name@version`` becomes ``name_version``. The full list is in the EAR."""
    if not golden:
        return None
    value = _LABEL_VALUE.sub("_", sorted(golden)[0])[:63].strip("._-")
    return value or None


def labels_for(st: Standing) -> dict[str, str | None]:
    return {
        LABEL_TRUSTED: "true" if st.state == "trusted" else "false",
        LABEL_GOLDEN: golden_label(st.golden) if st.state != UNREACHABLE else None,
    }


def annotations_for(st: Standing) -> dict[str, str | None]:
    out: dict[str, str | None] = {ANN_STATE: st.state}
    if st.ear is not None:
        out[ANN_EAR] = st.ear
    elif st.state == ABSENT:
        out[ANN_EAR] = None
    return out


def _taint(key: str, value: str, effect: str, now: str) -> dict[str, Any]:
    taint = {"key": key, "value": value, "effect": effect}
    if effect == "NoExecute":
        taint["timeAdded"] = now
    return taint


def taints_for(
    current: Sequence[Mapping[str, Any]], st: Standing, p: Policy, now: str
) -> list[Any]:
    """The whole taint list (``spec.taints`` is replaced, not merged): other owners' taints as
    they are, ours added, kept or removed."""
    others = [dict(t) for t in current if not str(t.get("key", "")).startswith(PREFIX)]
    ours = {str(t.get("key")): dict(t) for t in current if str(t.get("key", "")).startswith(PREFIX)}
    result = list(others)
    if st.state in NEEDS_TAINT:
        effect = p.unreachable_effect if st.state == UNREACHABLE else p.untrusted_effect
        old = ours.get(TAINT_UNTRUSTED)
        if old is not None and st.state == UNREACHABLE:
            result.append(old)  # an outage never weakens an existing taint
        elif old is not None and old.get("effect") == effect and old.get("value") == st.state:
            result.append(old)
        else:
            result.append(_taint(TAINT_UNTRUSTED, st.state, effect, now))
    if st.state != "trusted" and (TAINT_UNATTESTED in ours or st.state in UNATTESTED):
        result.append(
            ours.get(TAINT_UNATTESTED) or _taint(TAINT_UNATTESTED, "true", "NoSchedule", now)
        )
    return result


def condition_for(current: Sequence[Mapping[str, Any]], st: Standing, now: str) -> dict[str, Any]:
    status, reason = _REASONS.get(st.state, ("Unknown", "VerdictUnknown"))
    message = f"Assay: {st.state}" + (f" ({st.reason})" if st.reason else "")
    old = next((c for c in current if c.get("type") == CONDITION), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {
        "type": CONDITION,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastHeartbeatTime": now,
        "lastTransitionTime": since or now,
    }


def _strip_time(taints: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted(
        (str(t.get("key")), str(t.get("value", "")), str(t.get("effect"))) for t in taints
    )


def node_patch(node: Mapping[str, Any], st: Standing, p: Policy, now: str) -> dict[str, Any] | None:
    """A strategic-merge patch of the Node's labels, annotations and taints, or None if nothing
    of ours differs. A taint change carries ``metadata.resourceVersion``: the taint list was
    computed from this read, so a concurrent change to it must make the patch fail (409)."""
    meta = node.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    current_taints = (node.get("spec") or {}).get("taints") or []
    patch_meta: dict[str, Any] = {}
    want_labels = {k: v for k, v in labels_for(st).items() if labels.get(k) != v}
    want_ann = {k: v for k, v in annotations_for(st).items() if annotations.get(k) != v}
    if want_labels:
        patch_meta["labels"] = want_labels
    if want_ann:
        patch_meta["annotations"] = want_ann
    taints = taints_for(current_taints, st, p, now)
    patch: dict[str, Any] = {}
    if _strip_time(taints) != _strip_time(current_taints):
        patch["spec"] = {"taints": taints}
        patch_meta["resourceVersion"] = meta.get("resourceVersion")
    if patch_meta:
        patch["metadata"] = patch_meta
    return patch or None


def status_patch(node: Mapping[str, Any], st: Standing, now: str) -> dict[str, Any] | None:
    """A strategic-merge patch of ``status.conditions`` (merged by type), or None if unchanged."""
    current = (node.get("status") or {}).get("conditions") or []
    want = condition_for(current, st, now)
    old = next((c for c in current if c.get("type") == CONDITION), None)
    if old and all(old.get(k) == want[k] for k in ("status", "reason", "message")):
        return None
    return {"status": {"conditions": [want]}}
