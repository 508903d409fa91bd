"""The few Kubernetes API calls the controller makes, through the official client, as JSON.

Calls go through ``kubernetes.client`` (its configuration, authentication, TLS and URL
building) with ``_preload_content=False``, and the answer is read as plain JSON: the controller
works on the API's own documents, which is also what it validates against the published schema.
A non-2xx answer is ``KubeError`` with the status code (409 conflicts are retried by the caller).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

SMP = "application/strategic-merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _json(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        resp = call(*args, _preload_content=False, _request_timeout=10, **kwargs)
    except ApiException as exc:
        raise KubeError(int(exc.status or 0), str(exc.reason)) from None
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # no answer at all
        raise KubeError(0, str(exc)[:300]) from None
    status = int(getattr(resp, "status", 0))
    raw = resp.data
    if not 200 <= status < 300:
        raise KubeError(status, raw[:300].decode("utf-8", "replace"))
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


class KubeApi:
    """Nodes and Leases."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    def list_nodes(self) -> dict[str, Any]:
        return _json(self.core.list_node)

    def watch_nodes(self, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        """(type, raw object) events from ``resource_version`` until ``timeout`` seconds."""
        w = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in w.stream(  # type: ignore[no-untyped-call]
                self.core.list_node, resource_version=resource_version, timeout_seconds=timeout
            ):
                yield {"type": event["type"], "object": event["raw_object"]}
        except ApiException as exc:
            raise KubeError(int(exc.status or 0), str(exc.reason)) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeError(0, str(exc)[:300]) from None
        finally:
            w.stop()  # type: ignore[no-untyped-call]

    def get_node(self, name: str) -> dict[str, Any]:
        return _json(self.core.read_node, name)

    def patch_node(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(self.core.patch_node, name, patch, _content_type=SMP)

    def patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return _json(self.core.patch_node_status, name, patch, _content_type=SMP)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return _json(self.coordination.read_namespaced_lease, name, namespace)

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return _json(self.coordination.create_namespaced_lease, namespace, body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return _json(self.coordination.replace_namespaced_lease, name, namespace, body)
