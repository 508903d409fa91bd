"""The agent's state directory: the AK blobs and the enrollment record, written 0600.

The AK private blob is wrapped by the TPM's EK and useless on any other TPM, but the directory is
still private to the agent: a reader could otherwise load and use the key on this machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assay.errors import ConfigurationError

from .tpm import AkBlobs

AK_FILE = "ak.json"
AK_CONTEXT_FILE = "ak.ctx"
ENROLLMENT_FILE = "enrollment.json"


@dataclass(frozen=True, slots=True)
class Enrollment:
    node: str
    verifier: str
    enrollment_id: str
    ak_name: str  # hex


def _write_private(path: Path, data: dict[str, Any] | bytes) -> None:
    """Write ``data`` (bytes, or a dict as JSON) to ``path`` atomically, 0600 in a 0700 directory."""
    raw = data if isinstance(data, bytes) else json.dumps(data, indent=2, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"state file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"state file {path} is not a JSON object")
    return data


def save_ak(state_dir: Path, ak: AkBlobs) -> Path:
    path = state_dir / AK_FILE
    _write_private(
        path,
        {
            "alg": ak.alg,
            "ek_kind": ak.ek_kind,
            "public": ak.public.hex(),
            "private": ak.private.hex(),
            "name": ak.name.hex(),
        },
    )
    return path


def load_ak(state_dir: Path) -> AkBlobs | None:
    path = state_dir / AK_FILE
    data = _read(path)
    if data is None:
        return None
    try:
        return AkBlobs(
            alg=str(data["alg"]),
            ek_kind=str(data["ek_kind"]),
            public=bytes.fromhex(data["public"]),
            private=bytes.fromhex(data["private"]),
            name=bytes.fromhex(data["name"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"state file {path} is damaged: {exc}") from None


@dataclass(frozen=True, slots=True)
class AkContextFile:
    """The loaded AK's saved context (TPM2_ContextSave), so that a quote needs one ContextLoad
    instead of re-creating the EK. Integrity-protected by the TPM and valid only until its next
    reset; the TPM refuses it after that, or on another machine, and the agent loads the AK under
    the EK again. Written 0600 like the rest of the state."""

    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / AK_CONTEXT_FILE

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, blob: bytes) -> None:
        _write_private(self.path, blob)


def save_enrollment(state_dir: Path, enrollment: Enrollment) -> None:
    _write_private(state_dir / ENROLLMENT_FILE, asdict(enrollment))


IMA_CURSOR_FILE = "ima.json"
IMA_FULL = (0, 0)


def load_ima_cursor(state_dir: Path) -> tuple[int, int]:
    """Where the verifier said this node's next IMA chunk starts (entries, bytes); the full list
    when nothing readable is saved. The verifier's word, kept from its last answer: the agent
    never decides on its own that a chunk is enough (a verifier that cannot continue it answers
    ``ima_full_log_required``)."""
    try:
        data = _read(state_dir / IMA_CURSOR_FILE)
    except ConfigurationError:
        return IMA_FULL
    if data is None:
        return IMA_FULL
    entries, offset = data.get("entries"), data.get("offset")
    if type(entries) is not int or type(offset) is not int or entries < 0 or offset < 0:
        return IMA_FULL
    return (entries, offset) if (entries == 0) == (offset == 0) else IMA_FULL


def save_ima_cursor(state_dir: Path, cursor: tuple[int, int] | None) -> None:
    """Keep the verifier's cursor; None or (0, 0): the next chunk is the full list."""
    entries, offset = cursor or IMA_FULL
    path = state_dir / IMA_CURSOR_FILE
    if (entries, offset) == IMA_FULL:
        path.unlink(missing_ok=True)
        return
    _write_private(path, {"entries": entries, "offset": offset})
