"""Decoding request bodies (JSON, base64, labels, reasons): every failure a 400 with a code."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import request

from .context import services
from .errors import ApiError, bad_request


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object (size capped, content type checked)."""
    limit = services().config.max_json
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"JSON body larger than {limit} bytes")
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"JSON body larger than {limit} bytes")
    if not raw.strip():
        if required:
            raise bad_request("malformed_json", "a JSON object body is required")
        return {}
    if not request.mimetype.endswith("json"):
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("malformed_json", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("malformed_json", "body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 253
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise bad_request("bad_field", f"field {name!r} must be a non-empty string")
    if len(value) > max_len:
        raise bad_request("bad_field", f"field {name!r} is longer than {max_len} characters")
    return value


def b64_field(
    body: dict[str, Any], name: str, *, max_len: int, required: bool = True
) -> bytes | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request("bad_field", f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise bad_request("bad_field", f"field {name!r} must be a base64 string")
    if len(value) > (max_len * 4) // 3 + 4:
        raise bad_request("bad_field", f"field {name!r} is larger than {max_len} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("bad_base64", f"field {name!r} is not valid base64") from None
    if not data:
        raise bad_request("bad_field", f"field {name!r} is empty")
    return data


def labels_field(body: dict[str, Any], name: str = "labels") -> dict[str, str]:
    value = body.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 64:
        raise bad_request("bad_field", f"field {name!r} must be an object of at most 64 labels")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or not k or len(k) > 63 or len(v) > 253 or "=" in k or "," in k:
            raise bad_request("bad_field", f"label {k!r} must map a short name to a string")
        out[k] = v
    return out


def reason_field(body: dict[str, Any], *, required: bool = True) -> str:
    value = body.get("reason")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise bad_request("reason_required", "a 'reason' (1..1000 characters) is required")
    return value.strip()


def label_query(values: list[str]) -> dict[str, str]:
    """``?label=k=v&label=k2=v2`` → ``{"k": "v", "k2": "v2"}``."""
    out: dict[str, str] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise bad_request("bad_query", f"label filter {item!r} must be key=value")
        out[k] = v
    return out
