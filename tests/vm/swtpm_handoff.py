"""Take over a running swtpm after QEMU is gone: the data channel QEMU used, done by the host.

swtpm started with only a control socket (``--ctrl type=unixio``) has no TPM command channel of
its own: QEMU creates a socketpair and hands one end over the control socket with
``CMD_SET_DATAFD`` (SCM_RIGHTS). After the guest powered off and QEMU was killed (SIGKILL, so it
cannot send ``CMD_SHUTDOWN``), the TPM still holds the PCRs the firmware and the guest extended.
:func:`take_over` repeats QEMU's step and returns a tpm2-pytss ``PyTCTI`` over the new channel, so
``ESAPI`` (and the agent's :class:`agent.tpm.Tpm`) talk to the very TPM the boot measured into.

Nothing here sends ``CMD_INIT``: that would reset the TPM and lose the boot's PCRs.
"""

from __future__ import annotations

import array
import contextlib
import socket
import struct
from pathlib import Path

from tpm2_pytss import PyTCTI

from agent.tpm import TctiSpec, Tpm
from assay.errors import ConfigurationError

# swtpm control channel commands (swtpm's tpm_ioctl.h), sent as a big-endian u32
CMD_SET_LOCALITY = 5
CMD_SET_DATAFD = 16
_TPM_HEADER = 10
_MAX_RESPONSE = 4096


class HandoffError(ConfigurationError):
    """swtpm refused the data channel, or the channel broke mid-command."""


def _ctrl(
    ctrl: socket.socket, cmd: int, payload: bytes = b"", fds: list[int] | None = None
) -> None:
    """Send one control command (with ``fds`` as SCM_RIGHTS) and check its 4-byte result."""
    msg = struct.pack(">I", cmd) + payload
    try:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            ctrl.sendmsg([msg], ancillary)
        else:
            ctrl.sendall(msg)
        reply = _recv_exact(ctrl, 4)
    except OSError as exc:
        raise HandoffError(f"swtpm control command {cmd}: {exc}") from None
    (result,) = struct.unpack(">I", reply)
    if result != 0:
        raise HandoffError(f"swtpm control command {cmd} failed with TPM result 0x{result:x}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise HandoffError(f"swtpm closed the channel after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class SwtpmDataTcti(PyTCTI):  # type: ignore[misc]  # tpm2_pytss ships no type information
    """A TCTI over a socket that swtpm accepted as its data channel (raw TPM command bytes)."""

    def __init__(self, ctrl_path: Path, *, timeout: float = 30.0) -> None:
        super().__init__(max_size=_MAX_RESPONSE, magic=b"ASSAYVM")
        self.ctrl_path = ctrl_path
        self._ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctrl.settimeout(timeout)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._ctrl.connect(str(ctrl_path))
            _ctrl(self._ctrl, CMD_SET_DATAFD, fds=[theirs.fileno()])
            _ctrl(self._ctrl, CMD_SET_LOCALITY, bytes([0]))
        except (OSError, HandoffError) as exc:
            ours.close()
            self._ctrl.close()
            raise HandoffError(f"taking over swtpm at {ctrl_path}: {exc}") from None
        finally:
            theirs.close()  # swtpm holds its own copy now
        ours.settimeout(timeout)
        self._data = ours
        self._pending: bytes | None = None

    def do_transmit(self, command: bytes) -> None:
        try:
            self._data.sendall(bytes(command))
        except OSError as exc:
            raise HandoffError(f"sending a TPM command to swtpm: {exc}") from None

    def do_receive(self, timeout: int) -> bytes:
        header = _recv_exact(self._data, _TPM_HEADER)
        (size,) = struct.unpack_from(">I", header, 2)
        if not _TPM_HEADER <= size <= _MAX_RESPONSE:
            raise HandoffError(f"swtpm response declares {size} bytes")
        return header + _recv_exact(self._data, size - _TPM_HEADER)

    def do_set_locality(self, locality: int) -> None:
        _ctrl(self._ctrl, CMD_SET_LOCALITY, bytes([locality]))

    def do_finalize(self) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._data.close()
        with contextlib.suppress(OSError):
            self._ctrl.close()


def take_over(ctrl_path: Path) -> SwtpmDataTcti:
    """A TCTI to the swtpm whose control socket is ``ctrl_path`` (QEMU must be gone)."""
    return SwtpmDataTcti(ctrl_path)


class HandoffTpm(Tpm):
    """The agent's Tpm over a taken-over swtpm."""

    def __init__(self, ctrl_path: Path) -> None:
        super().__init__(take_over(ctrl_path), describe=TctiSpec("swtpm-handoff", str(ctrl_path)))
