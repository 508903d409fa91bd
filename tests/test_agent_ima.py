"""The agent's side of incremental IMA without a TPM: the verifier's cursor kept in the state
directory (the verifier's word, a damaged file reads as "send the full list"), the chunk read from
the cursor, and the evidence answer's ``ima`` field checked before it is believed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.client import _ima_next
from agent.errors import BadVerifierResponse, EventLogUnreadable
from agent.evidence import read_ima_chunk
from agent.state import IMA_CURSOR_FILE, IMA_FULL, load_ima_cursor, save_ima_cursor


def test_the_cursor_round_trips_0600_and_full_removes_it(tmp_path: Path) -> None:
    assert load_ima_cursor(tmp_path) == IMA_FULL
    save_ima_cursor(tmp_path, (12, 3456))
    assert load_ima_cursor(tmp_path) == (12, 3456)
    assert stat.S_IMODE(os.stat(tmp_path / IMA_CURSOR_FILE).st_mode) == 0o600
    save_ima_cursor(tmp_path, (0, 0))
    assert not (tmp_path / IMA_CURSOR_FILE).exists()
    save_ima_cursor(tmp_path, (3, 30))
    save_ima_cursor(tmp_path, None)
    assert load_ima_cursor(tmp_path) == IMA_FULL


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"entries": "3", "offset": 4}', '{"entries": -1, "offset": 4}',
     '{"entries": 3, "offset": 0}', '{"entries": true, "offset": true}', '{"entries": 3}'],
)  # fmt: skip
def test_a_damaged_cursor_means_the_full_list(tmp_path: Path, text: str) -> None:
    (tmp_path / IMA_CURSOR_FILE).write_text(text)
    assert load_ima_cursor(tmp_path) == IMA_FULL


def test_the_chunk_is_the_list_from_the_cursor_on(tmp_path: Path) -> None:
    path = tmp_path / "ima"
    path.write_bytes(b"A" * 100 + b"B" * 20)
    chunk = read_ima_chunk(path, (7, 100), 1000)
    assert (chunk.data, chunk.start, chunk.offset) == (b"B" * 20, 7, 100)
    assert read_ima_chunk(path, (0, 0), 1000).data == path.read_bytes()
    # a list shorter than the cursor (a new boot): an empty chunk, which the verifier refuses
    assert read_ima_chunk(path, (9, 500), 1000).data == b""
    with pytest.raises(EventLogUnreadable, match="cap"):
        read_ima_chunk(path, (0, 0), 50)
    path.write_bytes(b"")
    with pytest.raises(EventLogUnreadable, match="empty"):
        read_ima_chunk(path, (0, 0), 50)


@pytest.mark.parametrize(
    "value",
    ["x", {"entries": 1}, {"entries": "1", "offset": 2}, {"entries": -1, "offset": 2},
     {"entries": True, "offset": 2}, {"entries": 2**60, "offset": 2}],
)  # fmt: skip
def test_an_ima_answer_that_is_not_two_small_integers_is_a_bad_response(value: object) -> None:
    with pytest.raises(BadVerifierResponse):
        _ima_next({"ima": value}, "evidence response")


def test_no_ima_answer_is_none_and_a_good_one_is_read() -> None:
    assert _ima_next({}, "w") is None
    assert _ima_next({"ima": {"entries": 4, "offset": 400}}, "w") == (4, 400)
