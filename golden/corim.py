"""Golden sets as CoRIM (draft-ietf-rats-corim): CBOR reference values other RATS tools can read.

Layout: an unsigned CoRIM (tag 501) whose one CoMID (tag 506) holds one reference-value triple for
the environment ``{vendor: "assay", model: <set name>}``. Each reference value is a measurement map
whose ``mkey`` says what it is (``boot_app/shim``, ``firmware_blob``, ``initrd``, ``moklist``,
``scrtm_version``, ``cmdline/exact`` (``/regex``, ``/load_options``), ``measurement/<pcr>`` for another approved digest in that
PCR …, or the PCR number for a pinned PCR), whose ``name`` (11) is
the label or text, and whose ``digests`` (2) are ``[alg, value]`` pairs. Digest algorithms use the
IANA Named Information registry: sha-256 = 1, sha-384 = 7, sha-512 = 8. SHA-1 is not in that
registry, so SHA-1 digests (only in a set with ``allow_sha1``) use the text name ``"sha-1"``, which
CoRIM's ``int / text`` algorithm type permits. Policy fields with no CoRIM equivalent (status,
Secure Boot requirements, boot order, …) travel in the private-use CoRIM map key -70001.

Import goes back through the YAML schema, so a CoRIM file is validated exactly like a YAML one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import cbor2
import yaml

from assay.algorithms import HashAlg
from assay.cbor import loads_strict

from .model import GoldenSet, utc
from .yamlfmt import GoldenFormatError, load_yaml, to_plain

TAG_CORIM = 501
TAG_COMID = 506
TAG_URI = 32
PROFILE = "tag:assay.invalid,2026:golden/v1"
RUNTIME_PROFILE = "tag:assay.invalid,2026:runtime/v1"
KINDS = {PROFILE: "a golden set", RUNTIME_PROFILE: "a runtime policy"}
EXT_KEY = -70001
MAX_CORIM_BYTES = 16 * 1024 * 1024
NI_IDS: dict[HashAlg, int | str] = {
    HashAlg.SHA256: 1,
    HashAlg.SHA384: 7,
    HashAlg.SHA512: 8,
    HashAlg.SHA1: "sha-1",
}
_BY_NI = {v: k for k, v in NI_IDS.items()}
_MEASURED_KINDS = (("initrd", "initrds"),)


def _digests(plain: dict[str, Any]) -> list[list[Any]]:
    return [
        [NI_IDS[HashAlg.from_bank(b)], bytes.fromhex(plain[b])]
        for b in ("sha1", "sha256", "sha384", "sha512")
        if b in plain
    ]


def _mm(
    key: int | str, name: str | None = None, plain: dict[str, Any] | None = None
) -> dict[int, Any]:
    mval: dict[int, Any] = {}
    if plain is not None:
        mval[2] = _digests(plain)
    if name is not None:
        mval[11] = name
    return {0: key, 1: mval}


def _cmdline_mm(rule: dict[str, Any]) -> dict[int, Any]:
    kind, value = next(iter(rule.items()))
    if kind == "load_options":  # digests of the measured LoadOptions, no text
        return _mm("cmdline/load_options", None, value)
    return _mm(f"cmdline/{kind}", value)


def _measurements(plain: dict[str, Any]) -> list[dict[int, Any]]:
    fw, shim = plain.pop("firmware"), plain.pop("shim")
    out = [_mm(f"boot_app/{a['role']}", a["label"], a) for a in plain.pop("boot_apps")]
    out += [_mm("firmware_blob", b["label"], b) for b in fw["blobs"]]
    out += [_mm(int(pcr), None, d) for pcr, d in fw["pcrs"].items()]
    out += [_mm("scrtm_version", v) for v in fw["scrtm_versions"]]
    out += [_mm("initrd", m["label"], m) for m in plain.pop("initrds")]
    out += [_mm(kind, m["label"], m) for kind in ("moklist", "moklistx") for m in shim[kind]]
    out += [_mm("sbat_level", v) for v in shim["sbat_levels"]]
    out += [_cmdline_mm(c) for c in plain.pop("cmdlines")]
    out += [
        _mm(f"measurement/{pcr}", m["label"], m)
        for pcr, items in plain.pop("measurements").items()
        for m in items
    ]
    return out


def _epoch(when: str | None) -> cbor2.CBORTag | None:
    if when is None:
        return None
    return cbor2.CBORTag(1, int(utc(dt.datetime.fromisoformat(when)).timestamp()))


def export_corim(g: GoldenSet) -> bytes:
    """The set as an unsigned CoRIM (CBOR bytes)."""
    plain = to_plain(g)
    measurements = _measurements(plain)
    return envelope(g.ref, PROFILE, plain, [[_environment(g.name), measurements]])


def _environment(name: str) -> dict[int, Any]:
    return {0: {1: "assay", 2: name}}


def envelope(ref: str, profile: str, plain: dict[str, Any], triples: list[Any]) -> bytes:
    """An unsigned CoRIM of one CoMID holding ``triples`` (reference-value triples), with the
    profile, the validity window of ``plain`` and ``plain`` itself in the extension key."""
    comid = {1: {0: ref, 1: 0}, 4: {0: triples}}
    try:
        corim: dict[int, Any] = {
            0: ref,
            1: [cbor2.CBORTag(TAG_COMID, cbor2.dumps(comid))],
            3: cbor2.CBORTag(TAG_URI, profile),
            EXT_KEY: plain,
        }
        validity = {
            k: v
            for k, v in (
                (0, _epoch(plain.get("valid_from"))),
                (1, _epoch(plain.get("valid_until"))),
            )
            if v is not None
        }
        if validity:
            corim[5] = validity
        return bytes(cbor2.dumps(cbor2.CBORTag(TAG_CORIM, corim), canonical=True))
    except (UnicodeEncodeError, cbor2.CBOREncodeError) as exc:  # a name that is not UTF-8
        raise GoldenFormatError(f"{ref}: cannot be written as CoRIM: {exc}") from None


def _fail(source: str, message: str) -> GoldenFormatError:
    return GoldenFormatError(f"{source}: CoRIM: {message}")


def _expect(value: Any, kind: type | tuple[type, ...], what: str, source: str) -> Any:
    if not isinstance(value, kind):
        raise _fail(
            source,
            f"{what}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}",
        )
    return value


def _digest_fields(mval: Mapping[Any, Any], source: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in _expect(mval.get(2, []), (list, tuple), f"{where} digests", source):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[1], bytes)):
            raise _fail(source, f"{where}: a digest must be [algorithm, bytes]")
        alg = _BY_NI.get(pair[0])
        if alg is None:
            raise _fail(source, f"{where}: unsupported digest algorithm {pair[0]!r}")
        out[alg.bank] = pair[1].hex()
    return out


def _apply(plain: dict[str, Any], mm: Any, source: str, i: int) -> None:
    where = f"measurement {i}"
    mm = _expect(mm, Mapping, where, source)
    key, mval = mm.get(0), _expect(mm.get(1), Mapping, f"{where} mval", source)
    name = mval.get(11)
    digests = _digest_fields(mval, source, where)
    fw, shim = plain["firmware"], plain["shim"]
    if isinstance(key, int) and not isinstance(key, bool):
        fw["pcrs"][key] = digests
    elif isinstance(key, str) and key.startswith("boot_app/"):
        plain["boot_apps"].append({"label": name, "role": key.split("/", 1)[1], **digests})
    elif key == "firmware_blob":
        fw["blobs"].append({"label": name, **digests})
    elif key == "initrd":
        plain["initrds"].append({"label": name, **digests})
    elif key in ("moklist", "moklistx"):
        shim[key].append({"label": name, **digests})
    elif key == "scrtm_version":
        fw["scrtm_versions"].append(name)
    elif key == "sbat_level":
        shim["sbat_levels"].append(name)
    elif key in ("cmdline/exact", "cmdline/regex"):
        plain["cmdlines"].append({key.split("/", 1)[1]: name})
    elif key == "cmdline/load_options":
        plain["cmdlines"].append({"load_options": digests})
    elif isinstance(key, str) and key.startswith("measurement/") and _ascii_digits(key[12:]):
        plain["measurements"].setdefault(int(key[12:]), []).append({"label": name, **digests})
    else:
        raise _fail(source, f"{where}: unknown measurement key {key!r}")


def _ascii_digits(text: str) -> bool:
    """A PCR number: ASCII digits only (``str.isdigit`` also takes '³', which int() refuses)."""
    return text.isascii() and text.isdigit()


def _thaw(value: Any) -> Any:
    """Plain dicts and lists for the YAML schema to check; a tag left in them is refused."""
    if isinstance(value, cbor2.CBORTag):  # strict CBOR hands tags back uninterpreted
        raise ValueError(f"unexpected tag {value.tag}")
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _loads(data: bytes) -> Any:
    """Strict CBOR (assay.cbor): tags returned uninterpreted, never a bignum, date or regex."""
    return loads_strict(data, max_items=1 << 20, max_depth=16, tags=True)


def import_corim(data: bytes, source: str = "<corim>") -> GoldenSet:
    """Read a CoRIM written by :func:`export_corim`; anything malformed is a GoldenFormatError."""

    def start(plain: dict[str, Any]) -> None:
        plain["firmware"] = {"scrtm_versions": [], "blobs": [], "pcrs": {}}
        plain["shim"] = {"moklist": [], "moklistx": [], "sbat_levels": []}
        plain.update(boot_apps=[], initrds=[], cmdlines=[], measurements={})

    plain = read_envelope(data, source, PROFILE, start, _apply)
    return load_yaml(yaml.safe_dump(plain, sort_keys=False), source)


def read_envelope(
    data: bytes,
    source: str,
    profile: str,
    start: Callable[[dict[str, Any]], None],
    apply: Callable[[dict[str, Any], Any, str, int], None],
) -> dict[str, Any]:
    """The plain document of a CoRIM written by :func:`envelope`: the extension, prepared by
    ``start``, then each reference value given to ``apply`` (the measurement map, its index in
    its triple). Plain data only, for a YAML loader to validate; GoldenFormatError otherwise."""
    if len(data) > MAX_CORIM_BYTES:
        raise _fail(source, f"larger than {MAX_CORIM_BYTES} bytes")
    try:
        top = _loads(data)
        tag = _expect(top, cbor2.CBORTag, "top level", source)
        if tag.tag != TAG_CORIM:
            raise _fail(source, f"expected tag {TAG_CORIM} (unsigned CoRIM), got tag {tag.tag}")
        corim = _expect(tag.value, Mapping, "corim-map", source)
        _check_profile(corim.get(3), profile, source)
        plain = _thaw(_expect(corim.get(EXT_KEY), Mapping, f"assay extension {EXT_KEY}", source))
        start(plain)
        for triple in _triples(corim, source):
            if not (isinstance(triple, list | tuple) and len(triple) == 2):
                raise _fail(source, "a reference triple must be [environment, measurements]")
            for i, mm in enumerate(_expect(triple[1], (list, tuple), "measurements", source)):
                apply(plain, mm, source, i)
        plain = _thaw(plain)  # values taken from the CoMID too
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise _fail(source, f"not valid CBOR: {exc}") from None
    return dict(plain)


def _triples(corim: Mapping[Any, Any], source: str) -> list[Any]:
    out: list[Any] = []
    for t in _expect(corim.get(1), (list, tuple), "tags", source):
        inner = _expect(t, cbor2.CBORTag, "tag", source)
        if inner.tag != TAG_COMID:
            raise _fail(source, f"expected CoMID tag {TAG_COMID}, got {inner.tag}")
        comid = _expect(
            _loads(_expect(inner.value, bytes, "CoMID", source)), Mapping, "CoMID", source
        )
        triples = _expect(comid.get(4), Mapping, "triples", source).get(0)
        out += _expect(triples, list, "reference triples", source)
    return out


def _check_profile(value: Any, profile: str, source: str) -> None:
    """A CoRIM of the other kind (a runtime policy read as a golden set, or the reverse) is
    refused by name; a CoRIM with no profile is judged by its content alone."""
    if value is None:
        return
    got = value.value if isinstance(value, cbor2.CBORTag) and value.tag == TAG_URI else value
    if got != profile:
        kind = KINDS.get(got, "not an Assay CoRIM")
        raise _fail(source, f"profile {got!r} ({kind}), expected {profile!r} ({KINDS[profile]})")
