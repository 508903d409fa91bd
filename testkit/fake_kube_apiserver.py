"""FakeKubeApiserver: an in-process FAKE of the kube-apiserver's Node and Lease API, for tests.

No kube-apiserver can be installed here, so the node controller is tested against this fake,
driven by the real official ``kubernetes`` client over real HTTP — the client is never mocked.
It speaks the parts of the protocol the controller uses, with the real semantics:

- ``/api/v1/nodes``: list (``metadata.resourceVersion``), watch (``?watch=true`` — JSON lines of
  ``{"type", "object"}`` from a resourceVersion, until ``timeoutSeconds``), get, create, delete;
- ``PATCH /api/v1/nodes/{name}`` and ``…/status`` as ``application/merge-patch+json`` (RFC 7386)
  or ``application/strategic-merge-patch+json`` with Node's patch strategies: maps merge (null
  deletes a key), ``spec.taints`` is replaced whole (it has no patch strategy), ``status.conditions``
  merge by ``type`` (``$patch: delete`` removes one); the main resource ignores ``status`` and the
  ``status`` subresource changes only ``status``; a ``metadata.resourceVersion`` in the patch is a
  precondition (409 Conflict when stale). JSON Patch is answered 415 (the controller sends none);
- ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases``: create (409 AlreadyExists), get (404),
  replace (409 Conflict on a stale resourceVersion).

Every object it stores is validated against Kubernetes' published schema (kubernetes-validate,
``KUBE_VERSION``, strict): a write that is not a valid object is 422 Invalid and is recorded in
``invalid``, so a test fails on any object the controller writes wrongly. ``fail_next`` makes the
next requests fail with a status, for backoff tests.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

KUBE_VERSION = "1.37.0"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


MERGE_KEYS = {("status", "conditions"): "type", ("status", "addresses"): "type"}
"""Lists of a Node that strategic merge merges by key; every other list is replaced."""


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        here = (*path, key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and here in MERGE_KEYS:
            out[key] = _merge_list(out.get(key) or [], value, MERGE_KEYS[here])
        else:
            out[key] = strategic_merge(out.get(key), value, here)
    return out


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    items = [copy.deepcopy(i) for i in current]
    for item in patch:
        index = next((n for n, i in enumerate(items) if i.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                items.pop(index)
        elif index is None:
            items.append(copy.deepcopy(item))
        else:
            items[index] = merge_patch(items[index], item)
    return items


class FakeKubeApiserver:
    """A fake kube-apiserver on 127.0.0.1 (see the module docstring); ``url`` for the client."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 100
        self.nodes: dict[str, dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.invalid: list[str] = []
        self.requests: list[tuple[str, str, str]] = []
        self.answers: list[tuple[str, str, int]] = []
        """(method, path, status) of every answer, in order."""
        self._failures: list[int] = []
        self.before_next_patch: Callable[[], None] | None = None
        """Run once, just before the next PATCH is applied (another writer racing the client)."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self.lock:
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- test controls ------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.lock:
            self._failures.extend([status] * count)

    def add_node(self, name: str, **extra: Any) -> dict[str, Any]:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, **extra}
        return self.create_node(node)

    def node(self, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.nodes[name])

    def edit_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Another writer changes the node (a merge patch), bumping its resourceVersion."""
        with self.lock:
            return self._store_node(merge_patch(self.nodes[name], patch), "MODIFIED")

    # --- the API ------------------------------------------------------------------------------

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _validate(self, obj: dict[str, Any]) -> None:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            self.invalid.append(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: {exc}")
            raise ApiError(422, "Invalid", str(exc).splitlines()[0]) from None

    def _store_node(self, node: dict[str, Any], kind: str) -> dict[str, Any]:
        node.setdefault("apiVersion", "v1")
        node.setdefault("kind", "Node")
        node["metadata"]["resourceVersion"] = self._bump()
        self._validate(node)
        self.nodes[node["metadata"]["name"]] = node
        self.history.append((self.rv, kind, copy.deepcopy(node)))
        self.lock.notify_all()
        return copy.deepcopy(node)

    def create_node(self, node: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            name = node.get("metadata", {}).get("name")
            if name in self.nodes:
                raise ApiError(409, "AlreadyExists", f'nodes "{name}" already exists')
            node = copy.deepcopy(node)
            node["metadata"].setdefault("uid", f"uid-{name}")
            node["metadata"].setdefault("creationTimestamp", _now())
            return self._store_node(node, "ADDED")

    def delete_node(self, name: str) -> None:
        with self.lock:
            node = self.nodes.pop(name)
            node["metadata"]["resourceVersion"] = self._bump()
            self.history.append((self.rv, "DELETED", node))
            self.lock.notify_all()

    def get_node(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.nodes:
                raise ApiError(404, "NotFound", f'nodes "{name}" not found')
            return copy.deepcopy(self.nodes[name])

    def list_nodes(self) -> dict[str, Any]:
        with self.lock:
            return {
                "kind": "NodeList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": [copy.deepcopy(n) for n in self.nodes.values()],
            }

    def patch_node(self, name: str, ctype: str, patch: Any, status: bool) -> dict[str, Any]:
        with self.lock:
            race, self.before_next_patch = self.before_next_patch, None
            if race is not None:
                race()
            current = self.get_node(name)
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "the patch must be a JSON object")
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on nodes "{name}": '
                    "the object has been modified; please apply your changes to the "
                    "latest version and try again",
                )
            if ctype == "application/merge-patch+json":
                merged = merge_patch(current, patch)
            elif ctype == "application/strategic-merge-patch+json":
                merged = strategic_merge(current, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"{ctype} is not served by the fake")
            # The main resource ignores status; the status subresource changes only status.
            if status:
                result = {**current, "status": merged.get("status", {})}
            else:
                result = {**merged, "status": current.get("status", {})}
                if not result["status"]:
                    result.pop("status")
            result["metadata"] = {**result["metadata"], "name": name}
            if not result.get("status"):
                result.pop("status", None)
            return self._store_node(result, "MODIFIED")

    def watch_nodes(self, since: int, timeout: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            with self.lock:
                pending = [(rv, k, o) for rv, k, o in self.history if rv > seen]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self.lock.wait(min(left, 0.5))
                    continue
            for rv, kind, obj in pending:
                seen = rv
                yield {"type": kind, "object": obj}

    def lease(self, method: str, ns: str, name: str | None, body: Any) -> dict[str, Any]:
        with self.lock:
            if method == "POST":
                name = body.get("metadata", {}).get("name")
                if (ns, name) in self.leases:
                    raise ApiError(409, "AlreadyExists", f'leases "{name}" already exists')
                return self._store_lease(ns, body)
            assert name is not None
            current = self.leases.get((ns, name))
            if current is None:
                raise ApiError(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            if method == "GET":
                return copy.deepcopy(current)
            if method == "PUT":
                if (
                    body.get("metadata", {}).get("resourceVersion")
                    != current["metadata"]["resourceVersion"]
                ):
                    raise ApiError(
                        409, "Conflict", f'Operation cannot be fulfilled on leases "{name}"'
                    )
                return self._store_lease(ns, body)
            raise ApiError(405, "MethodNotAllowed", method)

    def _store_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        lease = copy.deepcopy(body)
        lease["apiVersion"], lease["kind"] = "coordination.k8s.io/v1", "Lease"
        lease["metadata"]["namespace"] = ns
        lease["metadata"]["resourceVersion"] = self._bump()
        self._validate(lease)
        self.leases[(ns, lease["metadata"]["name"])] = lease
        return copy.deepcopy(lease)

    def failure(self) -> int | None:
        with self.lock:
            return self._failures.pop(0) if self._failures else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Handler(BaseHTTPRequestHandler):
    """The HTTP side of the fake; ``fake`` is set on a subclass per server (``_handler``)."""

    fake: FakeKubeApiserver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        self.fake.answers.append((self.command, urlparse(self.path).path, code))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        size = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(size)) if size else None

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.fake.requests.append((method, url.path, self.headers.get("Content-Type", "")))
        try:
            failed = self.fake.failure()
            if failed is not None:
                raise ApiError(failed, "InternalError", "injected failure")
            body = self._body() if method in ("POST", "PUT", "PATCH") else None
            if url.path == "/api/v1/nodes" and query.get("watch") in ("true", "1"):
                return self._watch(query)
            self._send(200 if method != "POST" else 201, self._dispatch(method, url.path, body))
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _dispatch(self, method: str, path: str, body: Any) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if path == "/api/v1/nodes":
            if method == "GET":
                return self.fake.list_nodes()
            if method == "POST":
                return self.fake.create_node(body)
        elif path.startswith("/api/v1/nodes/"):
            name, status = parts[3], len(parts) == 5 and parts[4] == "status"
            if method == "GET":
                return self.fake.get_node(name)
            if method == "PATCH":
                ctype = self.headers.get("Content-Type", "").split(";")[0]
                return self.fake.patch_node(name, ctype, body, status)
        elif path.startswith(LEASES):
            rest = path[len(LEASES) :].split("/")
            if len(rest) >= 2 and rest[1] == "leases":
                return self.fake.lease(method, rest[0], rest[2] if len(rest) > 2 else None, body)
        raise ApiError(404, "NotFound", f"{method} {path} is not served by the fake")

    def _watch(self, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or self.fake.rv)
        timeout = float(query.get("timeoutSeconds") or 30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.fake.watch_nodes(since, timeout):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")


def _handler(fake: FakeKubeApiserver) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"fake": fake})
