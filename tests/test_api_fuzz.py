"""Property-based fuzzing of the live API: schemathesis against a real gunicorn verifier holding
real data (golden set from a real log, attested nodes, tokens of every role; testkit.apifuzz),
bounded here, longer under `scripts/fuzz --api`. Every response must match docs/openapi.yaml —
status, content type, headers, body, the `{"error": {"code", "message"}}` shape with a documented
code — and none may be a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testkit.apifuzz import FuzzResult, Verifier, fuzz, populated_verifier

EXAMPLES = 8
DOC = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml").read_text())
OPERATIONS = sum(
    1 for item in DOC["paths"].values() for m in item if m in ("get", "post", "put", "delete")
)


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    with populated_verifier(tmp_path_factory.mktemp("fuzz-api")) as v:
        yield v


@pytest.fixture(scope="module")
def result(verifier: Verifier, tmp_path_factory: pytest.TempPathFactory) -> FuzzResult:
    return fuzz(verifier, tmp_path_factory.mktemp("reports"), max_examples=EXAMPLES, seed=17)


def test_every_documented_operation_is_fuzzed(result: FuzzResult) -> None:
    assert result.errors == []
    assert result.operations == OPERATIONS - 1  # st run leaves out GET /v1/openapi.json itself
    assert result.requests >= 20 * OPERATIONS, result.requests


def test_the_api_answers_every_fuzzed_request_as_documented(result: FuzzResult) -> None:
    assert result.failures == [], f"{len(result.failures)} findings in {result.requests} requests"
