"""The configuration references in docs/ say what the code does: every setting of ServiceConfig is
a row of docs/operations.md's table and every setting of AgentConfig one of docs/agent.md's, no
row names a setting the code lacks, and each documented default is the code's."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.config import ENV_PREFIX, AgentConfig
from verifier.service.config import ServiceConfig, parse_pcr_list

DOCS = Path(__file__).resolve().parents[1] / "docs"
UNITS = {"s": 1, "/s": 1, "KiB": 1024, "MiB": 1024 * 1024, "days": 86400}
NONE = ("none", "unset", "system CAs")
FREE = ("host name",)  # a default computed on the node: not a literal to compare


def _table(doc: str, header: str) -> list[list[str]]:
    """The rows of the first table whose header row starts with ``header``."""
    lines = (DOCS / doc).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def _split(cell: str, n: int) -> list[str]:
    parts = [p.strip() for p in cell.split(" / ")]
    return parts if len(parts) == n else [cell] * n


def _names(cell: str) -> list[str]:
    return re.findall(r"`([a-z_]+)`", cell)


def _documented(doc: str, header: str, column: int) -> dict[str, tuple[str, list[str]]]:
    """setting → (its default cell, the row) for every setting named in the first column."""
    out: dict[str, tuple[str, list[str]]] = {}
    for row in _table(doc, header):
        names = _names(row[0])
        for name, default in zip(names, _split(row[column], len(names)), strict=True):
            assert name not in out, f"{doc}: {name} documented twice"
            out[name] = (default, row)
    return out


def _value(cell: str, like: Any) -> Any:
    """A documented default in the type of the code's default ``like``."""
    text = re.split(r" — |; | \(", cell)[0].strip()
    if text in NONE:
        return () if like == () else None  # an empty list of receivers reads "none"
    literal = re.fullmatch(r"`([^`]*)`", text)
    if literal:
        raw = literal.group(1)
        if isinstance(like, tuple):
            return parse_pcr_list(raw)
        if isinstance(like, dict):
            return json.loads(raw)
        if isinstance(like, bool):
            return raw == "true"
        return raw
    if text in ("true", "false"):
        return text == "true"
    number = re.fullmatch(r"([\d.]+)\s*(s|/s|KiB|MiB|days)?", text)
    assert number, f"cannot read the documented default {cell!r}"
    return float(number.group(1)) * UNITS.get(number.group(2) or "", 1)


def _code_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            continue
        missing = f.default is dataclasses.MISSING
        value = f.default_factory() if missing else f.default  # type: ignore[misc]
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


CASES = [
    ("operations.md", "| setting | default |", 1, ServiceConfig),
    ("agent.md", "| setting | env | default |", 2, AgentConfig),
]


@pytest.mark.parametrize(("doc", "header", "column", "cls"), CASES)
def test_every_setting_is_documented_and_every_documented_setting_exists(
    doc: str, header: str, column: int, cls: type
) -> None:
    documented = set(_documented(doc, header, column))
    code = set(_code_defaults(cls))
    assert sorted(code - documented) == [], f"in the code, not in docs/{doc}"
    assert sorted(documented - code) == [], f"in docs/{doc}, not in the code"


@pytest.mark.parametrize(("doc", "header", "column", "cls"), CASES)
def test_every_documented_default_is_the_codes(
    doc: str, header: str, column: int, cls: type
) -> None:
    code = _code_defaults(cls)
    for name, (cell, _) in _documented(doc, header, column).items():
        if cell in FREE:
            continue
        assert _value(cell, code[name]) == code[name], f"docs/{doc}: {name} default {cell!r}"


def test_every_agent_setting_names_its_environment_variable() -> None:
    for row in _table("agent.md", "| setting | env | default |"):
        names = _names(row[0])
        envs = re.findall(r"`(ASSAY_AGENT_[A-Z_]+)`", row[1])
        assert envs == [ENV_PREFIX + n.upper() for n in names], row
