"""Runtime policies as human-edited YAML, with the golden-set loader's strictness: unknown keys are
errors, every error is one line naming the file and the line (``golden.yamlfmt``'s helpers).

    kind: runtime-policy
    name: fleet-runtime
    version: "3"
    status: active                 # draft | active | retired | revoked (+ status_reason)
    valid_from: 2026-12-01         # optional, like golden sets
    allow_sha1: false
    require_boot_aggregate: true
    files:                         # path as the kernel logs it -> allowed digests
      /usr/bin/bash:
        - sha256: 5f1c…            # several entries: versions during a rollout
    exclude: ["/var/log/*", "/tmp/*"]
    buffers:                       # ima-buf name -> allowed buffer digests
      kernel_version: [{sha256: 9a0b…}]
    signatures:
      keys: [{label: vendor, pem: "-----BEGIN PUBLIC KEY-----…", keyid: f3452d23}]
      require: ["/usr/sbin/*"]
      approve_signed: false
      trusted_keyrings: [.ima]     # keys the list loads onto these count, after their load
      keyring_cas: [{label: fleet-ca, pem: "-----BEGIN CERTIFICATE-----…"}]
    selinux:
      require_enforcing: true
      policy_hashes: [c0ff…]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from assay.ima import load_key, parse_certificate

from .model import Digests
from .runtime import (
    RUNTIME_STATUSES,
    KeyringCa,
    RuntimePolicy,
    Selinux,
    SigningKey,
    freeze,
    kernel_name,
)
from .yamlfmt import (
    _BANKS,
    LIFECYCLE_KEYS,
    MAX_YAML_BYTES,
    _bool,
    _digests,
    _Doc,
    _dump_digests,
    _hex,
    _lifecycle,
    compose,
    dump_lifecycle,
)

KIND = "runtime-policy"
_SIGNATURE_KEYS = ("keys", "require", "approve_signed", "trusted_keyrings", "keyring_cas")
_TOP_KEYS = (
    "kind",
    *LIFECYCLE_KEYS,
    "allow_sha1",
    "require_boot_aggregate",
    "files",
    "exclude",
    "buffers",
    "signatures",
    "selinux",
)


def _digest_list(doc: _Doc, node: yaml.Node, path: str, allow_sha1: bool) -> tuple[Digests, ...]:
    out = []
    for i, item in enumerate(doc.sequence(node, path)):
        where = f"{path}[{i}]"
        got = _digests(doc, doc.mapping(item, where, _BANKS), where + ".", allow_sha1)
        if not got:
            doc.fail(item, where, "needs at least one digest (sha256, sha384, …)")
        out.append(got)
    if not out:
        doc.fail(node, path, "needs at least one approved digest")
    return tuple(out)


def _named_digests(
    doc: _Doc, node: yaml.Node | None, key: str, allow_sha1: bool
) -> Mapping[str, tuple[Digests, ...]]:
    if node is None:
        return freeze({})
    if not isinstance(node, yaml.MappingNode):
        doc.fail(node, key, "expected a mapping of name to digests")
    out: dict[str, tuple[Digests, ...]] = {}
    for name_node, value in node.value:
        name = kernel_name(doc.text(name_node, key))
        if name in out:
            doc.fail(name_node, key, f"{name!r} is listed twice")
        out[name] = _digest_list(doc, value, f"{key}[{name!r}]", allow_sha1)
    return freeze(out)


def _key(doc: _Doc) -> Callable[[yaml.Node, str], SigningKey]:
    def parse(node: yaml.Node, path: str) -> SigningKey:
        m = doc.mapping(node, path, ("label", "pem", "keyid"))
        for required in ("label", "pem"):
            if required not in m:
                doc.fail(node, path, f"a signing key needs {required!r}")
        keyid = None
        if "keyid" in m:
            raw = _hex(doc, m["keyid"], path + ".keyid", 4)
            keyid = int.from_bytes(raw, "big")
        pem = doc.text(m["pem"], path + ".pem")
        try:
            key = load_key(pem.encode(), doc.text(m["label"], path + ".label"), keyid)
        except ValueError as exc:
            doc.fail(m["pem"], path + ".pem", str(exc))
        return SigningKey(pem, key)

    return parse


def _ca(doc: _Doc) -> Callable[[yaml.Node, str], KeyringCa]:
    def parse(node: yaml.Node, path: str) -> KeyringCa:
        m = doc.mapping(node, path, ("label", "pem"))
        for required in ("label", "pem"):
            if required not in m:
                doc.fail(node, path, f"a keyring CA needs {required!r}")
        pem = doc.text(m["pem"], path + ".pem")
        try:
            cert = parse_certificate(pem.encode(), pem=True)
        except ValueError as exc:
            doc.fail(m["pem"], path + ".pem", f"not a PEM certificate: {exc}")
        return KeyringCa(doc.text(m["label"], path + ".label"), pem, cert)

    return parse


def _globs(doc: _Doc, m: Mapping[str, yaml.Node], key: str, path: str) -> tuple[str, ...]:
    return doc.items(m, key, path, lambda n, p: doc.text(n, p))


def _selinux(doc: _Doc, node: yaml.Node | None) -> Selinux | None:
    if node is None:
        return None
    m = doc.mapping(node, "selinux", ("require_enforcing", "policy_hashes"))
    hashes = doc.items(m, "policy_hashes", "selinux.", lambda n, p: _hex(doc, n, p, None))
    return Selinux(_bool(doc, m, "require_enforcing", "selinux.", True), hashes)


def _policy(doc: _Doc, root: yaml.Node) -> RuntimePolicy:
    m = doc.mapping(root, "", _TOP_KEYS)
    if "kind" not in m or doc.text(m["kind"], "kind") != KIND:
        doc.fail(m.get("kind", root), "kind", f"a runtime policy says kind: {KIND}")
    lifecycle = _lifecycle(doc, root, m, RUNTIME_STATUSES, "runtime policy")
    allow_sha1 = _bool(doc, m, "allow_sha1", "", False)
    sig = doc.mapping(m["signatures"], "signatures", _SIGNATURE_KEYS) if "signatures" in m else {}
    try:
        return RuntimePolicy(
            **lifecycle,
            allow_sha1=allow_sha1,
            files=_named_digests(doc, m.get("files"), "files", allow_sha1),
            exclude=_globs(doc, m, "exclude", ""),
            buffers=_named_digests(doc, m.get("buffers"), "buffers", allow_sha1),
            keys=doc.items(sig, "keys", "signatures.", _key(doc)),
            require_signatures=_globs(doc, sig, "require", "signatures."),
            approve_signed=_bool(doc, sig, "approve_signed", "signatures.", False),
            selinux=_selinux(doc, m.get("selinux")),
            require_boot_aggregate=_bool(doc, m, "require_boot_aggregate", "", True),
            trusted_keyrings=_globs(doc, sig, "trusted_keyrings", "signatures."),
            keyring_cas=doc.items(sig, "keyring_cas", "signatures.", _ca(doc)),
        )
    except ValueError as exc:
        doc.fail(root, "", str(exc))


def load_runtime_yaml(text: str | bytes, source: str = "<runtime policy>") -> RuntimePolicy:
    """Parse one runtime policy; every schema or syntax error is a GoldenFormatError with a line."""
    return _policy(*compose(text, source, "a runtime policy"))


def load_runtime_file(path: str) -> RuntimePolicy:
    with open(path, "rb") as fh:
        return load_runtime_yaml(fh.read(MAX_YAML_BYTES + 1), path)


def runtime_to_plain(p: RuntimePolicy) -> dict[str, Any]:
    """The policy as plain data: the YAML document (and a ``--json`` form)."""
    out: dict[str, Any] = {"kind": KIND, "name": p.name, "version": p.version}
    if p.description:
        out["description"] = p.description
    dump_lifecycle(p, out)
    out["allow_sha1"] = p.allow_sha1
    out["require_boot_aggregate"] = p.require_boot_aggregate
    out["files"] = {k: [_dump_digests(d) for d in v] for k, v in p.files.items()}
    out["exclude"] = list(p.exclude)
    out["buffers"] = {k: [_dump_digests(d) for d in v] for k, v in p.buffers.items()}
    if p.keys or p.require_signatures or p.approve_signed or p.trusted_keyrings:
        out["signatures"] = {
            "keys": [{"label": k.label, "keyid": k.key.keyid_hex, "pem": k.pem} for k in p.keys],
            "require": list(p.require_signatures),
            "approve_signed": p.approve_signed,
        }
        if p.trusted_keyrings:
            out["signatures"]["trusted_keyrings"] = list(p.trusted_keyrings)
            out["signatures"]["keyring_cas"] = [
                {"label": ca.label, "pem": ca.pem} for ca in p.keyring_cas
            ]
    if p.selinux is not None:
        out["selinux"] = {
            "require_enforcing": p.selinux.require_enforcing,
            "policy_hashes": [h.hex() for h in p.selinux.policy_hashes],
        }
    return out


def dump_runtime_yaml(p: RuntimePolicy) -> str:
    """YAML text that :func:`load_runtime_yaml` reads back into an equal policy."""
    return yaml.dump(
        runtime_to_plain(p), Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=True, width=1000
    )
