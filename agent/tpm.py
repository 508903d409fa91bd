"""The agent's TPM access through tpm2-pytss: the only module in Assay that touches libtss2.

What is trusted here: nothing the TPM returns is interpreted beyond what the agent needs to
ship it; the verifier re-parses and verifies every structure. Every transient object and session
this module creates is flushed in a ``finally`` (a direct swtpm connection has no resource
manager, so a leaked handle would exhaust the TPM's object slots across runs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

os.environ.setdefault("TSS2_LOG", "all+NONE")  # libtss2 logs to stderr; errors are ours to report

import tpm2_pytss
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TCTI,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HR,
    TPM2_PT,
    TPM2_SE,
    TPM2_SU,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_CONTEXT,
    TPMS_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TCTILdr,
    TSS2_Exception,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

from assay.algorithms import HashAlg

from .errors import NoTpmDevice, TpmBusy, TpmFailure

EK_TEMPLATES = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}
EK_CERT_INDEX = {"rsa": 0x01C00002, "ecc": 0x01C0000A}
AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
AK_ALGS = {"ecc": "ecc256:ecdsa-sha256", "rsa": "rsa2048:rsassa-sha256"}
_PCR_READ_ATTEMPTS = 3
# TPM_PT values (TPM 2.0 Part 2, 6.13) that tpm2-pytss does not name
_PT_VENDOR_STRING_1 = 0x106
_PT_FIRMWARE_VERSION_1 = 0x10B
_PT_FIRMWARE_VERSION_2 = 0x10C
_PT_NV_BUFFER_MAX = 0x12C
_TPM_RC_BUSY = {0x922, 0x908, 0x90A}  # TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING


def fapi_built() -> bool:
    """Whether this tpm2-pytss was built with FAPI (the agent never uses it; agent.lean_tss)."""
    return hasattr(tpm2_pytss, "FAPI")


class SavedContext(Protocol):
    """Where the AK's saved context (TPM2_ContextSave output) is kept between operations."""

    def read(self) -> bytes | None: ...

    def write(self, blob: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class TctiSpec:
    """A parsed ``--tcti`` value: the TCTI library name and its configuration string."""

    name: str
    conf: str | None

    def __str__(self) -> str:
        return self.name if self.conf is None else f"{self.name}:{self.conf}"


def parse_tcti(spec: str) -> TctiSpec:
    """``device:/dev/tpmrm0``, ``swtpm:host=127.0.0.1,port=2321``, ``mssim:…``, ``tabrmd``."""
    name, sep, conf = spec.strip().partition(":")
    if name not in ("device", "swtpm", "mssim", "tabrmd"):
        raise NoTpmDevice(f"unsupported TCTI {spec!r} (use device:, swtpm:, mssim: or tabrmd)")
    if name == "device" and not conf:
        conf = "/dev/tpmrm0"
    return TctiSpec(name, conf if sep and conf else (conf or None))


@dataclass(frozen=True, slots=True)
class TpmInfo:
    manufacturer: str
    vendor: str
    firmware_version: str
    pcr_banks: Mapping[HashAlg, tuple[int, ...]]
    unknown_banks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EndorsementKey:
    """The EK as created from the TCG default template of ``kind``, and its certificate if any."""

    kind: str  # "rsa" (RSA-2048, template L-1) or "ecc" (ECC P-256, template L-2)
    public: bytes  # marshalled TPM2B_PUBLIC
    name: bytes
    cert: bytes | None  # DER, from NV index ``cert_index``
    cert_index: int


@dataclass(frozen=True, slots=True)
class AkBlobs:
    """An AK as the TPM returned it from Create: loadable again under the same EK."""

    alg: str
    ek_kind: str
    public: bytes  # marshalled TPM2B_PUBLIC
    private: bytes  # marshalled TPM2B_PRIVATE (wrapped by the EK; useless off this TPM)
    name: bytes


@dataclass(frozen=True, slots=True)
class QuoteResult:
    attest: bytes  # marshalled TPM2B_ATTEST
    signature: bytes  # marshalled TPMT_SIGNATURE
    nonce: bytes
    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    ak_public: bytes


def _rc_error(exc: TSS2_Exception, what: str) -> TpmBusy | TpmFailure:
    rc = int(exc.rc)
    if (rc & 0xFFF) in _TPM_RC_BUSY and rc >> 16 == 0:
        return TpmBusy(f"{what}: TPM busy, retry later ({exc})")
    return TpmFailure(f"{what}: {exc}")


class Tpm:
    """One connection to a TPM; use as a context manager so the connection is always closed."""

    def __init__(self, tcti: str | TctiSpec | TCTI, *, describe: TctiSpec | None = None) -> None:
        """Open ``tcti`` by spec, or take an already-open TCTI object (e.g. a PyTCTI over a socket
        handed over from QEMU); ``describe`` then names it in messages."""
        if isinstance(tcti, TCTI):
            self.spec = describe or TctiSpec(type(tcti).__name__, None)
            self._tcti: TCTI = tcti
        else:
            self.spec = tcti if isinstance(tcti, TctiSpec) else parse_tcti(tcti)
            self._tcti = self._open_tcti(self.spec)
        try:
            self.esys = ESAPI(self._tcti)
        except TSS2_Exception as exc:
            self._tcti.finalize()
            raise NoTpmDevice(f"cannot initialise the TPM at {self.spec}: {exc}") from None

    @staticmethod
    def _open_tcti(spec: TctiSpec) -> TCTILdr:
        if spec.name == "device":
            path = spec.conf or "/dev/tpmrm0"
            if not os.path.exists(path):
                raise NoTpmDevice(f"no TPM device at {path}")
            try:
                os.close(os.open(path, os.O_RDWR))
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise TpmBusy(f"TPM device {path} is in use by another process") from None
                raise NoTpmDevice(f"cannot open TPM device {path}: {exc.strerror}") from None
        try:
            return TCTILdr(spec.name, spec.conf)
        except TSS2_Exception as exc:
            raise NoTpmDevice(f"cannot connect to the TPM at {spec}: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(TSS2_Exception):
            self.esys.close()
        with contextlib.suppress(TSS2_Exception):
            self._tcti.finalize()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _flushing(self, handle: ESYS_TR) -> Iterator[ESYS_TR]:
        try:
            yield handle
        finally:
            with contextlib.suppress(TSS2_Exception):
                self.esys.flush_context(handle)

    @contextlib.contextmanager
    def _ek_policy(self) -> Iterator[ESYS_TR]:
        """A policy session satisfying the default EK policy: PolicySecret(TPM_RH_ENDORSEMENT)."""
        session = self.esys.start_auth_session(
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            TPM2_ALG.SHA256,
        )
        with self._flushing(session):
            self.esys.policy_secret(ESYS_TR.ENDORSEMENT, session)
            yield session

    def _call(self, what: str, fn: object, *args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)  # type: ignore[operator]
        except TSS2_Exception as exc:
            raise _rc_error(exc, what) from None

    # -- information ---------------------------------------------------------------------------

    def info(self) -> TpmInfo:
        try:
            props = self._properties(TPM2_PT.MANUFACTURER, 16)
            banks, unknown = self.active_banks()
        except TSS2_Exception as exc:
            raise _rc_error(exc, "reading TPM properties") from None
        vendor = b"".join(
            props.get(_PT_VENDOR_STRING_1 + i, 0).to_bytes(4, "big") for i in range(4)
        )
        fw1 = props.get(_PT_FIRMWARE_VERSION_1, 0)
        fw2 = props.get(_PT_FIRMWARE_VERSION_2, 0)
        return TpmInfo(
            manufacturer=_ascii(props.get(int(TPM2_PT.MANUFACTURER), 0).to_bytes(4, "big")),
            vendor=_ascii(vendor),
            firmware_version=f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
            pcr_banks=banks,
            unknown_banks=unknown,
        )

    def _properties(self, first: int, count: int) -> dict[int, int]:
        _, data = self.esys.get_capability(TPM2_CAP.TPM_PROPERTIES, first, count)
        return {int(p.property): int(p.value) for p in data.data.tpmProperties}

    def active_banks(self) -> tuple[dict[HashAlg, tuple[int, ...]], tuple[int, ...]]:
        """Allocated PCR banks with their PCRs, and the algorithm ids Assay does not know."""
        _, data = self.esys.get_capability(TPM2_CAP.PCRS, 0, 1)
        banks: dict[HashAlg, tuple[int, ...]] = {}
        unknown: list[int] = []
        for sel in data.data.assignedPCR:
            pcrs = tuple(
                i for i in range(sel.sizeofSelect * 8) if sel.pcrSelect[i // 8] & (1 << (i % 8))
            )
            if not pcrs:
                continue
            try:
                banks[HashAlg(int(sel.hash))] = pcrs
            except ValueError:
                unknown.append(int(sel.hash))
        return banks, tuple(unknown)

    # -- NV and the endorsement key --------------------------------------------------------------

    def nv_indices(self) -> set[int]:
        try:
            _, data = self.esys.get_capability(TPM2_CAP.HANDLES, int(TPM2_HR.NV_INDEX), 256)
        except TSS2_Exception as exc:
            raise _rc_error(exc, "listing NV indices") from None
        return {int(h) for h in data.data.handles}

    def nv_read(self, index: int) -> bytes:
        """The whole content of an NV index, read in chunks the TPM accepts."""
        try:
            handle = self.esys.tr_from_tpmpublic(index)
        except TSS2_Exception as exc:
            raise _rc_error(exc, f"NV index 0x{index:08x}") from None
        try:
            public, _ = self.esys.nv_read_public(handle)
            size = int(public.nvPublic.dataSize)
            chunk = self._properties(_PT_NV_BUFFER_MAX, 1).get(_PT_NV_BUFFER_MAX, 512)
            out = bytearray()
            while len(out) < size:
                part = self.esys.nv_read(handle, min(chunk, size - len(out)), len(out))
                out += bytes(part)
            return bytes(out)
        except TSS2_Exception as exc:
            raise _rc_error(exc, f"reading NV index 0x{index:08x}") from None
        finally:
            with contextlib.suppress(TSS2_Exception):
                self.esys.tr_close(handle)

    def _ek_template(self, kind: str) -> tuple[bytes | None, TPM2B_PUBLIC]:
        present = self.nv_indices()

        def read(index: object) -> bytes:
            if int(index) not in present:  # type: ignore[call-overload]
                raise NoSuchIndex(int(index))  # type: ignore[call-overload]
            return self.nv_read(int(index))  # type: ignore[call-overload]

        cert, template = create_ek_template(EK_TEMPLATES[kind], read)
        return cert, template

    def resolve_ek_kind(self, kind: str) -> str:
        """``auto``: the EK whose certificate is provisioned, RSA-2048 first, then ECC P-256."""
        if kind != "auto":
            if kind not in EK_TEMPLATES:
                raise TpmFailure(f"unknown EK type {kind!r} (rsa, ecc or auto)")
            return kind
        present = self.nv_indices()
        for candidate in ("rsa", "ecc"):
            if EK_CERT_INDEX[candidate] in present:
                return candidate
        return "rsa"

    @contextlib.contextmanager
    def _loaded_ek(self, kind: str) -> Iterator[tuple[ESYS_TR, TPM2B_PUBLIC, bytes | None]]:
        cert, template = self._ek_template(kind)
        try:
            handle, public, _, _, _ = self.esys.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        except TSS2_Exception as exc:
            raise _rc_error(exc, f"creating the {kind} EK") from None
        with self._flushing(handle):
            yield handle, public, cert

    def endorsement_key(self, kind: str = "auto") -> EndorsementKey:
        kind = self.resolve_ek_kind(kind)
        with self._loaded_ek(kind) as (handle, public, cert):
            name = bytes(self.esys.tr_get_name(handle))
        return EndorsementKey(kind, public.marshal(), name, cert, EK_CERT_INDEX[kind])

    # -- the attestation key ---------------------------------------------------------------------

    def create_ak(self, ek_kind: str, alg: str = "ecc") -> AkBlobs:
        """A restricted signing key under the EK (fixedTPM, fixedParent, sensitiveDataOrigin)."""
        if alg not in AK_ALGS:
            raise TpmFailure(f"unknown AK algorithm {alg!r} (ecc or rsa)")
        area = TPMT_PUBLIC.parse(AK_ALGS[alg], objectAttributes=AK_ATTRIBUTES)
        if alg == "ecc":  # a signing key has no symmetric algorithm
            area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
        else:
            area.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG.NULL
        template = TPM2B_PUBLIC(area)
        with self._loaded_ek(ek_kind) as (ek, _, _), self._ek_policy() as session:
            try:
                private, public, _, _, _ = self.esys.create(ek, None, template, session1=session)
            except TSS2_Exception as exc:
                raise _rc_error(exc, "creating the AK") from None
        name = _object_name(public)
        return AkBlobs(alg, ek_kind, public.marshal(), private.marshal(), name)

    @contextlib.contextmanager
    def _loaded_ak(self, ak: AkBlobs, saved: SavedContext | None = None) -> Iterator[ESYS_TR]:
        """The AK, loaded: from its saved context when that still loads and is this AK (one
        ContextLoad), else under a re-created EK (CreatePrimary: seconds for RSA on some TPMs),
        saving the context for next time."""
        handle = self._load_saved_ak(ak, saved) if saved is not None else None
        if handle is None:
            handle = self._load_ak_under_ek(ak)
            if saved is not None:
                with contextlib.suppress(TSS2_Exception, OSError):
                    saved.write(bytes(self.esys.context_save(handle).marshal()))
        with self._flushing(handle):
            yield handle

    def _load_ak_under_ek(self, ak: AkBlobs) -> ESYS_TR:
        public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
        private, _ = TPM2B_PRIVATE.unmarshal(ak.private)
        with self._loaded_ek(ak.ek_kind) as (ek, _, _), self._ek_policy() as session:
            try:
                return self.esys.load(ek, private, public, session1=session)
            except TSS2_Exception as exc:
                raise TpmFailure(
                    f"the saved AK does not load under this TPM's {ak.ek_kind} EK "
                    f"(another TPM, or the TPM was cleared): {exc}"
                ) from None

    def _load_saved_ak(self, ak: AkBlobs, saved: SavedContext) -> ESYS_TR | None:
        """None when there is no saved context, or it no longer loads (the TPM was reset or
        cleared since, or it is another TPM's), or what loads is not this AK."""
        try:
            blob = saved.read()
            if blob is None:
                return None
            context, _ = TPMS_CONTEXT.unmarshal(blob)
            handle = self.esys.context_load(context)
        except (TSS2_Exception, OSError, ValueError, TypeError):
            return None
        try:
            _, name, _ = self.esys.read_public(handle)
            if bytes(name) == ak.name:
                return handle
        except TSS2_Exception:
            pass
        with contextlib.suppress(TSS2_Exception):
            self.esys.flush_context(handle)
        return None

    def activate_credential(self, ak: AkBlobs, credential_blob: bytes, secret: bytes) -> bytes:
        """Recover the verifier's secret; the TPM refuses unless the blob names this AK and EK."""
        try:
            blob, _ = TPM2B_ID_OBJECT.unmarshal(credential_blob)
            enc, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(secret)
        except (TSS2_Exception, ValueError, TypeError) as exc:
            raise TpmFailure(
                f"credential challenge is not a TPM2B_ID_OBJECT/SECRET: {exc}"
            ) from None
        with (
            self._loaded_ak(ak) as ak_handle,
            self._loaded_ek(ak.ek_kind) as (ek, _, _),
            self._ek_policy() as session,
        ):
            try:
                cert_info = self.esys.activate_credential(
                    ak_handle, ek, blob, enc, session1=ESYS_TR.PASSWORD, session2=session
                )
            except TSS2_Exception as exc:
                raise _rc_error(exc, "ActivateCredential refused the challenge") from None
        return bytes(cert_info)

    # -- PCRs and quotes -------------------------------------------------------------------------

    def pcr_read(
        self, selection: Mapping[HashAlg, tuple[int, ...]]
    ) -> tuple[int, dict[HashAlg, dict[int, bytes]]]:
        """All selected PCRs and the update counter, in as many PCR_Read calls as needed.

        PCR_Read returns at most 8 digests per call; if the update counter moves between calls
        the whole read starts again, so the values returned are one consistent state.
        """
        for _ in range(_PCR_READ_ATTEMPTS):
            counter, values, consistent = self._pcr_read_once(selection)
            if consistent:
                return counter, values
        raise TpmBusy("PCRs kept changing while being read")

    def _pcr_read_once(
        self, selection: Mapping[HashAlg, tuple[int, ...]]
    ) -> tuple[int, dict[HashAlg, dict[int, bytes]], bool]:
        wanted = {alg: set(pcrs) for alg, pcrs in selection.items() if pcrs}
        values: dict[HashAlg, dict[int, bytes]] = {alg: {} for alg in selection}
        counter: int | None = None
        while any(wanted.values()):
            try:
                count, got, digests = self.esys.pcr_read(_selection(wanted))
            except TSS2_Exception as exc:
                raise _rc_error(exc, "PCR_Read") from None
            if counter is not None and count != counter:
                return count, values, False
            counter = int(count)
            it = iter(digests)
            progress = False
            for sel in got:
                alg = HashAlg(int(sel.hash))
                for i in range(sel.sizeofSelect * 8):
                    if sel.pcrSelect[i // 8] & (1 << (i % 8)):
                        values[alg][i] = bytes(next(it))
                        wanted[alg].discard(i)
                        progress = True
            if not progress:
                missing = {alg.bank: sorted(p) for alg, p in wanted.items() if p}
                raise TpmFailure(f"the TPM does not have PCRs {missing}")
        return counter or 0, values, True

    def quote(
        self,
        ak: AkBlobs,
        nonce: bytes,
        selection: Mapping[HashAlg, tuple[int, ...]],
        *,
        saved: SavedContext | None = None,
    ) -> QuoteResult:
        """Quote with the AK and return the PCR values of the same state (counter unchanged).
        ``saved``: where the AK's context is kept between quotes (see ``_loaded_ak``)."""
        if len(nonce) > 64:
            raise TpmFailure(f"nonce of {len(nonce)} bytes is longer than a TPM2B_DATA allows")
        with self._loaded_ak(ak, saved) as handle:
            for _ in range(_PCR_READ_ATTEMPTS):
                before, pcrs = self.pcr_read(selection)
                try:
                    attest, signature = self.esys.quote(
                        handle, _selection(selection), nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
                    )
                except TSS2_Exception as exc:
                    raise _rc_error(exc, "TPM2_Quote") from None
                after, _ = self.pcr_read({next(iter(selection)): (0,)})
                if after == before:
                    return QuoteResult(
                        attest.marshal(), signature.marshal(), nonce, pcrs, ak.public
                    )
        raise TpmBusy("PCRs kept changing while quoting")

    # -- used by the boot simulator --------------------------------------------------------------

    def startup(self, locality: int = 0) -> None:
        """TPM2_Startup(CLEAR) at ``locality`` (3 gives PCR0 = 00…03, as a StartupLocality log)."""
        try:
            self._tcti.set_locality(locality)
            self.esys.startup(TPM2_SU.CLEAR)
        except TSS2_Exception as exc:
            raise _rc_error(exc, f"TPM2_Startup at locality {locality}") from None
        finally:
            with contextlib.suppress(TSS2_Exception):
                self._tcti.set_locality(0)

    def pcr_extend(self, pcr: int, digests: Mapping[HashAlg, bytes]) -> None:
        wire = struct.pack(">I", len(digests)) + b"".join(
            struct.pack(">H", int(alg)) + digest for alg, digest in digests.items()
        )
        values, _ = TPML_DIGEST_VALUES.unmarshal(wire)
        try:
            self.esys.pcr_extend(ESYS_TR.parse(f"pcr{pcr}"), values)
        except TSS2_Exception as exc:
            raise _rc_error(exc, f"PCR_Extend of PCR {pcr}") from None


def _selection(selection: Mapping[HashAlg, set[int] | tuple[int, ...]]) -> TPML_PCR_SELECTION:
    out = []
    for alg, pcrs in selection.items():
        if not pcrs:
            continue
        mask = bytearray(3)
        for i in pcrs:
            mask[i // 8] |= 1 << (i % 8)
        out.append(
            TPMS_PCR_SELECTION(hash=TPM2_ALG(int(alg)), sizeofSelect=3, pcrSelect=bytes(mask))
        )
    return TPML_PCR_SELECTION(out)


def _object_name(public: TPM2B_PUBLIC) -> bytes:
    return bytes(public.get_name().marshal())[2:]


def _ascii(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace").strip()
