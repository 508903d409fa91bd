"""Golden sets as human-edited YAML: a strict schema whose errors name the file and line.

The document is composed into PyYAML nodes (which carry line marks) and walked by hand, so every
error is one line like ``fleet.yaml:12: boot_apps[2].sha256: expected 64 hex digits, got 63``.
Unknown keys are errors (a typo must never silently drop a requirement).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar, cast

import yaml

from assay.algorithms import HashAlg
from assay.errors import ConfigurationError
from assay.eventlog import WORKAROUNDS
from assay.events import EventType, event_type_name

from .model import (
    DEFAULT_LSMS,
    ROLES,
    STATUSES,
    BootApp,
    CmdlineRule,
    Digests,
    Firmware,
    GoldenSet,
    KernelLsm,
    Lifecycle,
    Measured,
    Role,
    SecureBoot,
    Shim,
    digests,
    utc,
)

MAX_YAML_BYTES = 16 * 1024 * 1024
_BANKS = ("sha1", "sha256", "sha384", "sha512")
T = TypeVar("T")


class GoldenFormatError(ConfigurationError):
    """A golden-set file that does not follow the schema (YAML or CoRIM)."""


class _Doc:
    """Context for one document: its name (for messages) and a constructor for scalars."""

    def __init__(self, source: str, loader: yaml.SafeLoader):
        self.source = source
        self.loader = loader

    def fail(self, node: yaml.Node, path: str, message: str) -> NoReturn:
        line = node.start_mark.line + 1
        prefix = f"{path}: " if path else ""
        raise GoldenFormatError(f"{self.source}:{line}: {prefix}{message}")

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected a single value, got a {_kind(node)}")
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.fail(node, path, f"bad value: {_first_line(exc)}")

    def typed(self, node: yaml.Node, path: str, want: type[T], what: str) -> T:
        value = self.scalar(node, path)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            self.fail(node, path, f"expected {what}, got {value!r}")
        return value

    def text(self, node: yaml.Node, path: str) -> str:
        value = self.scalar(node, path)
        if isinstance(value, bool) or value is None:
            self.fail(node, path, f"expected text, got {value!r}")
        if isinstance(value, int | float | dt.date):
            return str(value)
        if not isinstance(value, str):
            self.fail(node, path, f"expected text, got {value!r}")
        return value

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got a {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.text(key_node, path)
            if key in out:
                self.fail(key_node, path, f"duplicate key {key!r}")
            if allowed is not None and key not in allowed:
                self.fail(key_node, path, f"unknown key {key!r} (allowed: {', '.join(allowed)})")
            out[key] = value_node
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and self.scalar(node, path) is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, f"expected a list, got a {_kind(node)}")
        return list(node.value)

    def items(
        self,
        parent: Mapping[str, yaml.Node],
        key: str,
        path: str,
        parse: Callable[[yaml.Node, str], T],
    ) -> tuple[T, ...]:
        node = parent.get(key)
        if node is None:
            return ()
        return tuple(
            parse(item, f"{path}{key}[{i}]")
            for i, item in enumerate(self.sequence(node, path + key))
        )


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    return "list" if isinstance(node, yaml.SequenceNode) else "value"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _hex(doc: _Doc, node: yaml.Node, path: str, size: int | None) -> bytes:
    text = doc.text(node, path).strip().lower()
    try:
        value = bytes.fromhex(text)
    except ValueError:
        doc.fail(node, path, f"expected hex digits, got {text[:80]!r}")
    if size is not None and len(value) != size:
        doc.fail(node, path, f"expected {2 * size} hex digits, got {len(text)}")
    return value


def _digests(doc: _Doc, m: Mapping[str, yaml.Node], path: str, allow_sha1: bool) -> Digests:
    out: dict[HashAlg, bytes] = {}
    for bank in _BANKS:
        node = m.get(bank)
        if node is None:
            continue
        alg = HashAlg.from_bank(bank)
        if alg is HashAlg.SHA1 and not allow_sha1:
            doc.fail(node, path + bank, "SHA-1 digests need allow_sha1: true on the set")
        out[alg] = _hex(doc, node, path + bank, alg.digest_size)
    return digests(out)


def _measured(doc: _Doc, allow_sha1: bool) -> Callable[[yaml.Node, str], Measured]:
    def parse(node: yaml.Node, path: str) -> Measured:
        m = doc.mapping(node, path, ("label", *_BANKS))
        got = _digests(doc, m, path + ".", allow_sha1)
        if not got:
            doc.fail(node, path, "needs at least one digest (sha256, sha384, …)")
        label = doc.text(m["label"], path + ".label") if "label" in m else ""
        return Measured(label=label, digests=got)

    return parse


def _boot_app(doc: _Doc, allow_sha1: bool) -> Callable[[yaml.Node, str], BootApp]:
    def parse(node: yaml.Node, path: str) -> BootApp:
        m = doc.mapping(node, path, ("label", "role", *_BANKS))
        if "label" not in m:
            doc.fail(node, path, "a boot application needs a label")
        got = _digests(doc, m, path + ".", allow_sha1)
        if not got:
            doc.fail(node, path, "needs at least one Authenticode digest (sha256, sha384)")
        role = _choice(doc, m.get("role"), path + ".role", ROLES, "other")
        return BootApp(label=doc.text(m["label"], path + ".label"), role=role, digests=got)

    return parse


def _choice(doc: _Doc, node: yaml.Node | None, path: str, choices: tuple[T, ...], default: T) -> T:
    if node is None:
        return default
    value = doc.text(node, path)
    if value not in choices:
        doc.fail(node, path, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    return cast(T, value)


def _cmdline(doc: _Doc, allow_sha1: bool) -> Callable[[yaml.Node, str], CmdlineRule]:
    def parse(node: yaml.Node, path: str) -> CmdlineRule:
        m = doc.mapping(node, path, ("exact", "regex", "load_options"))
        if len(m) != 1:
            doc.fail(
                node, path, "a command-line rule needs exactly one of exact, regex or load_options"
            )
        if "load_options" in m:
            where = path + ".load_options"
            opts = doc.mapping(m["load_options"], where, _BANKS)
            got = _digests(doc, opts, where + ".", allow_sha1)
            if not got:
                doc.fail(m["load_options"], where, "needs at least one digest (sha256, sha384, …)")
            return CmdlineRule(load_options=got)
        try:
            if "exact" in m:
                return CmdlineRule(exact=doc.text(m["exact"], path + ".exact"))
            return CmdlineRule(regex=doc.text(m["regex"], path + ".regex"))
        except Exception as exc:  # re.error
            doc.fail(node, path, f"bad regular expression: {_first_line(exc)}")

    return parse


def _bool(doc: _Doc, m: Mapping[str, yaml.Node], key: str, path: str, default: bool) -> bool:
    node = m.get(key)
    return default if node is None else doc.typed(node, path + key, bool, "true or false")


def _fingerprints(doc: _Doc, node: yaml.Node, path: str) -> tuple[str, ...]:
    return tuple(
        _hex(doc, item, f"{path}[{i}]", None).hex()
        for i, item in enumerate(doc.sequence(node, path))
    )


def _secure_boot(doc: _Doc, node: yaml.Node | None) -> SecureBoot:
    if node is None:
        return SecureBoot()
    keys = (
        "required",
        "pk",
        "kek",
        "db_must_contain",
        "dbx_must_include",
        "allow_debug_mode",
        "allow_dma_protection_disabled",
    )
    p = "secure_boot."
    m = doc.mapping(node, "secure_boot", keys)

    def fps(key: str) -> tuple[str, ...] | None:
        return _fingerprints(doc, m[key], p + key) if key in m else None

    return SecureBoot(
        required=_bool(doc, m, "required", p, True),
        pk=fps("pk"),
        kek=fps("kek"),
        db_must_contain=fps("db_must_contain") or (),
        dbx_must_include=fps("dbx_must_include") or (),
        allow_debug_mode=_bool(doc, m, "allow_debug_mode", p, False),
        allow_dma_protection_disabled=_bool(doc, m, "allow_dma_protection_disabled", p, False),
    )


def _pcr_index(doc: _Doc, node: yaml.Node, path: str, top: int) -> int:
    value = doc.typed(node, path, int, "a PCR number")
    if not 0 <= value <= top:
        doc.fail(node, path, f"PCR {value} is out of range 0–{top}")
    return value


def _firmware(doc: _Doc, node: yaml.Node | None, allow_sha1: bool) -> Firmware:
    if node is None:
        return Firmware()
    m = doc.mapping(node, "firmware", ("scrtm_versions", "blobs", "pcrs"))
    pcrs: dict[int, Digests] = {}
    if "pcrs" in m:
        for key_node, value_node in _as_mapping(doc, m["pcrs"], "firmware.pcrs").value:
            pcr = _pcr_index(doc, key_node, "firmware.pcrs", 3)
            path = f"firmware.pcrs.{pcr}"
            pcrs[pcr] = _digests(doc, doc.mapping(value_node, path, _BANKS), path + ".", allow_sha1)
    return Firmware(
        scrtm_versions=doc.items(m, "scrtm_versions", "firmware.", doc.text),
        blobs=doc.items(m, "blobs", "firmware.", _measured(doc, allow_sha1)),
        pcrs=MappingProxyType(dict(sorted(pcrs.items()))),
    )


def _as_mapping(doc: _Doc, node: yaml.Node, path: str) -> yaml.MappingNode:
    doc.mapping(node, path, None)
    return cast(yaml.MappingNode, node)


def _shim(doc: _Doc, node: yaml.Node | None, allow_sha1: bool) -> Shim:
    if node is None:
        return Shim()
    m = doc.mapping(node, "shim", ("moklist", "moklistx", "sbat_levels"))
    return Shim(
        moklist=doc.items(m, "moklist", "shim.", _measured(doc, allow_sha1)),
        moklistx=doc.items(m, "moklistx", "shim.", _measured(doc, allow_sha1)),
        sbat_levels=doc.items(m, "sbat_levels", "shim.", doc.text),
    )


def _kernel_lsm(doc: _Doc, node: yaml.Node | None) -> KernelLsm | None:
    if node is None:
        return None
    m = doc.mapping(node, "kernel_lsm", ("require_selinux", "approved"))
    approved: tuple[str, ...] = DEFAULT_LSMS
    if "approved" in m:
        approved = tuple(doc.items(m, "approved", "kernel_lsm.", doc.text))
    return KernelLsm(_bool(doc, m, "require_selinux", "kernel_lsm.", True), approved)


def _event_type(doc: _Doc, node: yaml.Node, path: str) -> int:
    value = doc.scalar(node, path)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    if isinstance(value, str):
        if value in EventType.__members__:
            return int(EventType[value])
        if value.startswith("EV_UNKNOWN_0x"):
            try:
                return int(value[len("EV_UNKNOWN_0x") :], 16)
            except ValueError:
                pass
    doc.fail(node, path, f"expected an event type name or number, got {value!r}")


def _extra_types(doc: _Doc, node: yaml.Node | None) -> Mapping[int, tuple[int, ...]]:
    if node is None:
        return MappingProxyType({})
    out: dict[int, tuple[int, ...]] = {}
    for key_node, value_node in _as_mapping(doc, node, "extra_event_types").value:
        pcr = _pcr_index(doc, key_node, "extra_event_types", 23)
        path = f"extra_event_types.{pcr}"
        out[pcr] = tuple(
            _event_type(doc, item, f"{path}[{i}]")
            for i, item in enumerate(doc.sequence(value_node, path))
        )
    return MappingProxyType(dict(sorted(out.items())))


def _measurements(
    doc: _Doc, node: yaml.Node | None, allow_sha1: bool
) -> Mapping[int, tuple[Measured, ...]]:
    if node is None:
        return MappingProxyType({})
    out: dict[int, tuple[Measured, ...]] = {}
    parse = _measured(doc, allow_sha1)
    for key_node, value_node in _as_mapping(doc, node, "measurements").value:
        pcr = _pcr_index(doc, key_node, "measurements", 23)
        path = f"measurements.{pcr}"
        out[pcr] = tuple(
            parse(item, f"{path}[{i}]") for i, item in enumerate(doc.sequence(value_node, path))
        )
    return MappingProxyType(dict(sorted(out.items())))


def _workaround_name(doc: _Doc) -> Callable[[yaml.Node, str], str]:
    def parse(node: yaml.Node, path: str) -> str:
        name = doc.text(node, path)
        if name not in WORKAROUNDS:
            doc.fail(node, path, f"unknown workaround {name!r} (known: {', '.join(WORKAROUNDS)})")
        return name

    return parse


def _when(doc: _Doc, node: yaml.Node | None, path: str) -> dt.datetime | None:
    if node is None:
        return None
    value = doc.scalar(node, path)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            doc.fail(node, path, f"expected an ISO 8601 date/time, got {value!r}")
    if isinstance(value, dt.datetime):
        return utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    doc.fail(node, path, f"expected an ISO 8601 date/time, got {value!r}")


LIFECYCLE_KEYS = (
    "name",
    "version",
    "description",
    "status",
    "status_reason",
    "valid_from",
    "valid_until",
)
"""The keys :func:`_lifecycle` reads, in a golden set and a runtime policy alike."""

_TOP_KEYS = (
    *LIFECYCLE_KEYS,
    "selector",
    "allow_sha1",
    "required_pcrs",
    "firmware",
    "secure_boot",
    "boot_apps",
    "boot_order",
    "cmdlines",
    "initrds",
    "shim",
    "require_exit_boot_services",
    "extra_event_types",
    "measurements",
    "deny_workarounds",
    "kernel_lsm",
)


def _lifecycle(
    doc: _Doc, root: yaml.Node, m: Mapping[str, yaml.Node], statuses: tuple[T, ...], what: str
) -> dict[str, Any]:
    """The :class:`~golden.model.Lifecycle` fields (and description) of a golden set or runtime
    policy, as keyword arguments: name and version required, a revoked one needs a reason."""
    for key in ("name", "version"):
        if key not in m:
            doc.fail(root, "", f"missing required key {key!r}")
    status = _choice(doc, m.get("status"), "status", statuses, cast(T, "active"))
    reason = doc.text(m["status_reason"], "status_reason") if "status_reason" in m else None
    if status == "revoked" and not reason:
        doc.fail(m.get("status", root), "status", f"a revoked {what} needs a status_reason")
    return {
        "name": doc.text(m["name"], "name"),
        "version": doc.text(m["version"], "version"),
        "description": doc.text(m["description"], "description") if "description" in m else "",
        "status": status,
        "status_reason": reason,
        "valid_from": _when(doc, m.get("valid_from"), "valid_from"),
        "valid_until": _when(doc, m.get("valid_until"), "valid_until"),
    }


def _golden(doc: _Doc, root: yaml.Node) -> GoldenSet:
    m = doc.mapping(root, "", _TOP_KEYS)
    lifecycle = _lifecycle(doc, root, m, STATUSES, "set")
    allow_sha1 = _bool(doc, m, "allow_sha1", "", False)
    selector = (
        {
            doc.text(k, "selector"): doc.text(v, "selector")
            for k, v in _as_mapping(doc, m["selector"], "selector").value
        }
        if "selector" in m
        else {}
    )
    order: tuple[Role, ...] = doc.items(
        m, "boot_order", "", lambda n, p: _choice(doc, n, p, ROLES, "other")
    )
    return GoldenSet(
        **lifecycle,
        selector=MappingProxyType(selector),
        allow_sha1=allow_sha1,
        required_pcrs=tuple(
            sorted(set(doc.items(m, "required_pcrs", "", lambda n, p: _pcr_index(doc, n, p, 23))))
        ),
        firmware=_firmware(doc, m.get("firmware"), allow_sha1),
        secure_boot=_secure_boot(doc, m.get("secure_boot")),
        boot_apps=doc.items(m, "boot_apps", "", _boot_app(doc, allow_sha1)),
        boot_order=order,
        cmdlines=doc.items(m, "cmdlines", "", _cmdline(doc, allow_sha1)),
        initrds=doc.items(m, "initrds", "", _measured(doc, allow_sha1)),
        shim=_shim(doc, m.get("shim"), allow_sha1),
        require_exit_boot_services=_bool(doc, m, "require_exit_boot_services", "", True),
        extra_event_types=_extra_types(doc, m.get("extra_event_types")),
        measurements=_measurements(doc, m.get("measurements"), allow_sha1),
        deny_workarounds=tuple(
            dict.fromkeys(doc.items(m, "deny_workarounds", "", _workaround_name(doc)))
        ),
        kernel_lsm=_kernel_lsm(doc, m.get("kernel_lsm")),
    )


def compose(text: str | bytes, source: str, what: str) -> tuple[_Doc, yaml.Node]:
    """One YAML document, size-capped, composed into nodes that carry line marks (nothing is
    constructed yet); GoldenFormatError names the line of a syntax error."""
    if len(text) > MAX_YAML_BYTES:
        raise GoldenFormatError(f"{source}: larger than {MAX_YAML_BYTES} bytes")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 0
        raise GoldenFormatError(f"{source}:{line}: YAML syntax: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise GoldenFormatError(f"{source}: not YAML: {_first_line(exc)}") from None
    finally:
        loader.dispose()
    if root is None:
        raise GoldenFormatError(f"{source}: empty document, expected {what}")
    return _Doc(source, loader), root


def load_yaml(text: str | bytes, source: str = "<golden>") -> GoldenSet:
    """Parse one golden set; every schema or syntax error is a GoldenFormatError naming the line."""
    return _golden(*compose(text, source, "a golden set"))


def load_yaml_file(path: str) -> GoldenSet:
    with open(path, "rb") as fh:
        data = fh.read(MAX_YAML_BYTES + 1)
    return load_yaml(data, path)


# --- dumping -------------------------------------------------------------------------------------


def _dump_digests(d: Digests) -> dict[str, str]:
    return {alg.bank: value.hex() for alg, value in d.items()}


def _dump_cmdline(c: CmdlineRule) -> dict[str, Any]:
    if c.exact is not None:
        return {"exact": c.exact}
    if c.regex is not None:
        return {"regex": c.regex}
    return {"load_options": _dump_digests(c.load_options)}


def _dump_measured(items: tuple[Measured, ...]) -> list[dict[str, str]]:
    return [{"label": m.label, **_dump_digests(m.digests)} for m in items]


def dump_lifecycle(x: Lifecycle[Any], out: dict[str, Any]) -> dict[str, Any]:
    """Add the status, its reason and the validity window to ``out`` (as :func:`_lifecycle` reads
    them back)."""
    out["status"] = x.status
    if x.status_reason is not None:
        out["status_reason"] = x.status_reason
    for key, when in (("valid_from", x.valid_from), ("valid_until", x.valid_until)):
        if when is not None:
            out[key] = when.isoformat().replace("+00:00", "Z")
    return out


def to_plain(g: GoldenSet) -> dict[str, Any]:
    """The set as plain data (the YAML document; also the ``--json`` form)."""
    out = dump_lifecycle(g, {"name": g.name, "version": g.version, "description": g.description})
    if g.selector:
        out["selector"] = dict(g.selector)
    out["allow_sha1"] = g.allow_sha1
    out["required_pcrs"] = list(g.required_pcrs)
    fw = g.firmware
    out["firmware"] = {
        "scrtm_versions": list(fw.scrtm_versions),
        "blobs": _dump_measured(fw.blobs),
        "pcrs": {pcr: _dump_digests(d) for pcr, d in fw.pcrs.items()},
    }
    sb = g.secure_boot
    sbd: dict[str, Any] = {"required": sb.required}
    if sb.pk is not None:
        sbd["pk"] = list(sb.pk)
    if sb.kek is not None:
        sbd["kek"] = list(sb.kek)
    sbd |= {
        "db_must_contain": list(sb.db_must_contain),
        "dbx_must_include": list(sb.dbx_must_include),
        "allow_debug_mode": sb.allow_debug_mode,
        "allow_dma_protection_disabled": sb.allow_dma_protection_disabled,
    }
    out["secure_boot"] = sbd
    out["boot_apps"] = [
        {"label": a.label, "role": a.role, **_dump_digests(a.digests)} for a in g.boot_apps
    ]
    out["boot_order"] = list(g.boot_order)
    out["cmdlines"] = [_dump_cmdline(c) for c in g.cmdlines]
    out["initrds"] = _dump_measured(g.initrds)
    out["shim"] = {
        "moklist": _dump_measured(g.shim.moklist),
        "moklistx": _dump_measured(g.shim.moklistx),
        "sbat_levels": list(g.shim.sbat_levels),
    }
    out["require_exit_boot_services"] = g.require_exit_boot_services
    out["extra_event_types"] = {
        pcr: [event_type_name(t) for t in types] for pcr, types in g.extra_event_types.items()
    }
    out["measurements"] = {pcr: _dump_measured(items) for pcr, items in g.measurements.items()}
    out["deny_workarounds"] = list(g.deny_workarounds)
    if g.kernel_lsm is not None:
        lsm = g.kernel_lsm
        out["kernel_lsm"] = {"require_selinux": lsm.require_selinux, "approved": list(lsm.approved)}
    return out


def dump_yaml(g: GoldenSet) -> str:
    """YAML text that :func:`load_yaml` reads back into an equal set."""
    return yaml.dump(
        to_plain(g), Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=True, width=1000
    )
