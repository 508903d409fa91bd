"""The kube-scheduler extender protocol, ``k8s.io/kube-scheduler/extender/v1``, exactly.

Request (``ExtenderArgs``): ``{"Pod": v1.Pod, "Nodes": v1.NodeList | null, "NodeNames": [..] |
null}`` — ``Nodes`` when the extender is configured ``nodeCacheCapable: false``, ``NodeNames``
when true. Filter answers ``ExtenderFilterResult``: ``{"Nodes" | "NodeNames": the passing ones,
"FailedNodes": {}, "FailedAndUnresolvableNodes": {name: reason}, "Error": ""}`` in the same
mode it was asked; prioritize answers ``HostPriorityList``: ``[{"Host", "Score"}]`` with scores
0..``MAX_PRIORITY``.

Attestation failures are ``FailedAndUnresolvableNodes``: preempting pods cannot make a node
trusted, so the scheduler must not try. Pure: the standing of each name comes from a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assay.errors import MalformedEvidence

MAX_PRIORITY = 10
MAX_NODES = 50_000

Judge = Callable[[Sequence[str]], tuple[list[int], dict[str, str]]]
"""names → (indices of the schedulable ones, {name: why not} for every other)."""


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """The nodes one request asks about, in the mode it asked."""

    names: tuple[str, ...]
    node_items: tuple[Mapping[str, Any], ...] | None
    """The v1.Node objects when the scheduler sent ``Nodes`` (nodeCacheCapable false)."""
    node_list: Mapping[str, Any] | None


def _bad(message: str) -> MalformedEvidence:
    return MalformedEvidence(message, where="ExtenderArgs")


def _node_name(item: Any) -> str:
    meta = item.get("metadata") if isinstance(item, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        raise _bad("every item of Nodes needs metadata.name")
    return name


def parse_args(body: Any) -> ExtenderArgs:
    """Untrusted JSON → ExtenderArgs; exactly one of ``Nodes`` and ``NodeNames``."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    nodes, names = body.get("Nodes"), body.get("NodeNames")
    if (nodes is None) == (names is None):
        raise _bad("send exactly one of Nodes (nodeCacheCapable: false) and NodeNames (true)")
    if names is not None:
        if not isinstance(names, list) or len(names) > MAX_NODES:
            raise _bad(f"NodeNames must be a list of at most {MAX_NODES} names")
        if names and {type(n) for n in names} != {str}:
            raise _bad("NodeNames must hold strings")
        return ExtenderArgs(tuple(names), None, None)
    if not isinstance(nodes, dict):
        raise _bad("Nodes must be a v1.NodeList")
    items = nodes.get("items") or []
    if not isinstance(items, list) or len(items) > MAX_NODES:
        raise _bad(f"Nodes.items must be a list of at most {MAX_NODES} nodes")
    return ExtenderArgs(tuple(_node_name(i) for i in items), tuple(items), nodes)


def filter_nodes(args: ExtenderArgs, judge: Judge) -> dict[str, Any]:
    """The ExtenderFilterResult: only nodes the judge passes; any name it cannot judge fails."""
    passed, failed = judge(args.names)
    result: dict[str, Any] = {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": failed,
        "Error": "",
    }
    if args.node_items is None:
        result["NodeNames"] = [args.names[i] for i in passed]
    else:
        kept = [args.node_items[i] for i in passed]
        result["Nodes"] = {**(args.node_list or {}), "items": kept}
    return result


def prioritize(args: ExtenderArgs, judge: Judge) -> list[dict[str, Any]]:
    """HostPriorityList: ``MAX_PRIORITY`` for a node that passes, 0 for any other."""
    passed = set(judge(args.names)[0])
    return [
        {"Host": n, "Score": MAX_PRIORITY if i in passed else 0} for i, n in enumerate(args.names)
    ]


def error_result(message: str, names: Sequence[str] = ()) -> dict[str, Any]:
    """A failed filter: every node unresolvable and ``Error`` set, so the scheduler fails closed."""
    return {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {n: message for n in names},
        "Error": message,
    }
