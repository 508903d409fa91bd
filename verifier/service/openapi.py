"""``GET /v1/openapi.json``: the API's contract, ``openapi.yaml`` beside this module (the same file
as docs/openapi.yaml), served as JSON to anyone — it says nothing the docs do not.

``tests/test_openapi.py`` keeps it equal to the routes, parameters, statuses and error codes of
the code; ``tests/test_api_fuzz.py`` fuzzes a real verifier against it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, Response

openapi_bp = Blueprint("openapi", __name__, url_prefix="/v1")


@functools.cache
def document() -> dict[str, Any]:
    """The parsed document (read once per process from the installed package)."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@functools.cache
def _encoded() -> bytes:
    return json.dumps(document()).encode()


@openapi_bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(_encoded(), mimetype="application/json")
