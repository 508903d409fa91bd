"""``assay-verifier ima show|replay`` as users run it: the JSON schema, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import imalogbuilder as b
from .test_ima_parse import VECTORS


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier", *args], capture_output=True, text=True, timeout=60
    )


def _write(tmp_path: Path, made: list[b.Made], *, ascii_form: bool = False) -> Path:
    path = tmp_path / (
        "ascii_runtime_measurements" if ascii_form else "binary_runtime_measurements"
    )
    path.write_bytes(b.ascii_lines(made) if ascii_form else b.binary(made))
    return path


def test_replay_json_has_the_documented_shape_and_the_kernels_values(tmp_path: Path) -> None:
    made = [*b.typical(4), b.file_entry(b"/x", b"x", template="ima-sig")]
    proc = run("ima", "replay", str(_write(tmp_path, made)), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc)[:4] == ["entries", "violations", "templates", "pcrs"]
    assert set(doc) <= {"entries", "violations", "templates", "pcrs", "sha1_padded"}
    assert (doc["entries"], doc["violations"]) == (8, 1)
    assert doc["templates"] == {"ima-buf": 1, "ima-ng": 6, "ima-sig": 1}
    assert {"sha1", "sha256", "sha384", "sha512"} <= set(doc["pcrs"])
    for bank in ("sha1", "sha256", "sha384", "sha512"):
        assert doc["pcrs"][bank] == {"10": b.expected_pcr(made, bank).hex()}
    assert (
        doc["sha1_padded"]["sha256"]["10"]
        == b.expected_pcr(made, "sha256", mode="sha1-padded").hex()
    )
    assert "sha1" not in doc["sha1_padded"]


def test_replay_reads_the_ascii_form_to_the_same_values(tmp_path: Path) -> None:
    made = b.typical(3)
    binary = json.loads(run("ima", "replay", str(_write(tmp_path, made)), "--json").stdout)
    text = json.loads(
        run("ima", "replay", str(_write(tmp_path, made, ascii_form=True)), "--json").stdout
    )
    assert binary == text


def test_replay_text_output_lists_every_bank(tmp_path: Path) -> None:
    proc = run("ima", "replay", str(VECTORS / "keylime-openpower-ima-sig.ascii"))
    assert proc.returncode == 0
    assert "ascii IMA list, 5 entries (5 ima-sig), 0 violations" in proc.stdout
    assert "sha1     PCR10 357ad3dba1f24238f7818d82e4049a642854d17a" in proc.stdout


def test_show_json_escapes_hostile_names_and_keeps_their_bytes(tmp_path: Path) -> None:
    name = b"/tmp/\x1b]0;pwned\x07\n[bold]x\xff"
    made = [b.boot_aggregate_entry(b.pcrs_0_9()), b.file_entry(name, b"x")]
    path = _write(tmp_path, made)
    doc = json.loads(run("ima", "show", str(path), "--json").stdout)
    entry = doc["entries"][1]
    assert entry["name"] == "/tmp/\\x1b]0;pwned\\x07\\x0a[bold]x\\xff"
    assert bytes.fromhex(entry["name_hex"]) == name
    table = run("ima", "show", str(path))
    assert table.returncode == 0 and "\x1b]" not in table.stdout and "[bold]x" in table.stdout


def test_show_json_reports_signatures_and_buffers() -> None:
    doc = json.loads(
        run("ima", "show", str(VECTORS / "keylime-openpower-ima-sig.ascii"), "--json").stdout
    )
    assert doc["format"] == "ascii" and doc["template_hash"] == "sha1"
    assert doc["entries"][3]["sig"] == {
        "type": 3,
        "version": 2,
        "hash_algo": "sha256",
        "keyid": "f3452d23",
        "size": 256,
    }
    keyring = json.loads(
        run("ima", "show", str(VECTORS / "keylime-ima-keyring.ascii"), "--json").stdout
    )
    assert keyring["entries"][0]["buf"].startswith("308201d1")


def test_bad_input_is_one_line_naming_entry_and_offset_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, b.typical(3))
    path.write_bytes(path.read_bytes()[:-7])
    for command in ("show", "replay"):
        proc = run("ima", command, str(path), "--json")
        assert proc.returncode == 2 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"assay-verifier: error: {path}: IMA entry 5, offset "
        )


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    proc = run("ima", "replay", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "nope" in proc.stderr
