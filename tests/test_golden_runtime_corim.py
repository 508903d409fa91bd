"""Runtime policies as CoRIM: export, import back, the CLI, and what import refuses."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509

from golden.__main__ import main as golden_main
from golden.corim import EXT_KEY, _thaw, export_corim, import_corim
from golden.model import GoldenSet
from golden.runtime import KeyringCa, RuntimePolicy, freeze
from golden.runtime_corim import export_runtime_corim, import_runtime_corim
from golden.runtime_yaml import dump_runtime_yaml, load_runtime_yaml
from golden.yamlfmt import GoldenFormatError

from .test_ima_policy import DOC

CA_PEM = (Path(__file__).parent / "vectors" / "ima" / "sig" / "ca.crt.pem").read_text()


def _policy() -> RuntimePolicy:
    p = load_runtime_yaml(DOC, "fleet.yaml")
    ca = KeyringCa("fleet-ca", CA_PEM, x509.load_pem_x509_certificate(CA_PEM.encode()))
    return dataclasses.replace(p, trusted_keyrings=(".ima",), keyring_cas=(ca,))


def test_runtime_corim_round_trip_gives_the_same_policy() -> None:
    p = _policy()
    assert import_runtime_corim(export_runtime_corim(p)) == p


def test_each_approved_version_is_its_own_reference_triple() -> None:
    p = _policy()
    top = cbor2.loads(export_runtime_corim(p))
    assert top.tag == 501 and top.value[3].value == "tag:assay.invalid,2026:runtime/v1"
    comid = cbor2.loads(top.value[1][0].value)
    triples = comid[4][0]
    got = [(t[0], [m[0] for m in t[1]]) for t in triples]
    env = {0: {1: "assay", 2: "fleet-runtime"}}
    assert got == [
        (env, ["file:/opt/my_app/run"]),
        (env, ["file:/usr/bin/bash"]),
        (env, ["file:/usr/bin/bash"]),
        (env, ["buffer:kernel_version"]),
    ]
    bash = [t[1][0][1][2] for t in triples[1:3]]
    assert bash == [
        [[1, hashlib.sha256(b"bash").digest()]],
        [[1, hashlib.sha256(b"bash 5.2").digest()]],
    ]
    ext = top.value[EXT_KEY]
    assert (
        "files" not in ext
        and "buffers" not in ext
        and list(ext["exclude"]) == ["/var/log/*", "/tmp/*"]
    )
    assert list(ext["signatures"]["trusted_keyrings"]) == [".ima"]


def test_a_golden_set_corim_is_refused_by_runtime_import_and_the_reverse() -> None:
    golden = export_corim(GoldenSet("boot", "1"))
    with pytest.raises(
        GoldenFormatError, match=r"profile .*golden/v1.* \(a golden set\), expected"
    ):
        import_runtime_corim(golden, "boot.cbor")
    runtime = export_runtime_corim(_policy())
    with pytest.raises(GoldenFormatError, match=r"\(a runtime policy\), expected .*golden/v1"):
        import_corim(runtime, "rt.cbor")


def _edited(edit: Callable[[list[Any]], None]) -> bytes:
    """The policy's CoRIM with its reference triples changed by ``edit``."""
    corim = dict(cbor2.loads(export_runtime_corim(_policy())).value)
    comid = _thaw(cbor2.loads(corim[1][0].value))
    edit(comid[4][0])
    corim[1] = [cbor2.CBORTag(506, cbor2.dumps(comid))]
    return bytes(cbor2.dumps(cbor2.CBORTag(501, corim)))


def _with_measurement(key: object) -> bytes:
    return _edited(lambda t: t.append([{}, [{0: key, 1: {2: [[1, bytes(32)]]}}]]))


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("initrd", "unknown measurement key 'initrd' (file:… or buffer:…)"),
        ("file:", "unknown measurement key 'file:'"),
        (7, "unknown measurement key 7"),
    ],
)
def test_unknown_runtime_reference_values_are_named(key: object, needle: str) -> None:
    with pytest.raises(GoldenFormatError, match=r"x\.cbor: CoRIM: ") as info:
        import_runtime_corim(_with_measurement(key), "x.cbor")
    assert needle in str(info.value)


def test_a_bad_digest_in_the_corim_fails_like_the_yaml_would() -> None:
    def shorten(triples: list[Any]) -> None:
        triples[0][1][0][1][2] = [[1, b"short"]]

    with pytest.raises(GoldenFormatError, match="expected 64 hex digits"):
        import_runtime_corim(_edited(shorten), "x.cbor")


def test_a_name_that_is_not_utf8_cannot_be_exported() -> None:
    p = _policy()
    odd = dataclasses.replace(p, files=freeze({"/bin/\udcff": p.files["/usr/bin/bash"]}))
    with pytest.raises(GoldenFormatError, match="cannot be written as CoRIM"):
        export_runtime_corim(odd)


def test_golden_set_corim_with_a_non_ascii_pcr_digit_names_the_key() -> None:
    blob = cbor2.dumps(
        cbor2.CBORTag(
            501,
            {
                EXT_KEY: {},
                1: [
                    cbor2.CBORTag(506, cbor2.dumps({4: {0: [[{}, [{0: "measurement/³", 1: {}}]]]}}))
                ],
            },
        )
    )
    with pytest.raises(GoldenFormatError) as info:
        import_corim(blob, "x.cbor")
    assert (
        str(info.value) == "x.cbor: CoRIM: measurement 0: unknown measurement key 'measurement/³'"
    )


def test_cli_exports_imports_and_shows_a_runtime_corim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "rt.yaml"
    src.write_text(dump_runtime_yaml(_policy()))
    out, back = tmp_path / "rt.cbor", tmp_path / "back.yaml"
    assert golden_main(["runtime", "export", str(src), "--corim", str(out)]) == 0
    assert golden_main(["runtime", "import", str(out), "-o", str(back)]) == 0
    assert load_runtime_yaml(back.read_text()) == _policy()
    capsys.readouterr()
    assert golden_main(["runtime", "show", str(out)]) == 0
    assert "kind: runtime-policy" in capsys.readouterr().out
    assert golden_main(["import", str(out), "-o", str(tmp_path / "boot.yaml")]) == 4
    assert "(a runtime policy)" in capsys.readouterr().err
