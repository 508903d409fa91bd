"""The strict CBOR decoder (assay.cbor): decodes its profile exactly as cbor2 does, refuses the rest
quickly, and with ``tags=True`` hands tags back uninterpreted (CoRIM import)."""

from __future__ import annotations

import contextlib
import time

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.cbor import CborError, loads_strict
from golden.corim import EXT_KEY, import_corim
from golden.yamlfmt import GoldenFormatError

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.floats(allow_nan=False),
)
profile = st.recursive(
    leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 30)), c, max_size=4),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(profile)
def test_the_profile_decodes_exactly_like_cbor2(value: object) -> None:
    data = cbor2.dumps(value)
    try:
        decoded = loads_strict(data)
    except CborError as exc:
        assert "nested deeper than" in str(exc)  # the one limit hypothesis can reach
        return
    assert decoded == cbor2.loads(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_only_ever_raise_cbor_error(data: bytes, tags: bool) -> None:
    with contextlib.suppress(CborError):
        loads_strict(data, tags=tags)


def test_tags_are_refused_unless_asked_for() -> None:
    data = cbor2.dumps(cbor2.CBORTag(501, {0: "x"}))
    with pytest.raises(CborError, match="offset 0: semantic tags are not accepted"):
        loads_strict(data)
    assert loads_strict(data, tags=True) == cbor2.CBORTag(501, {0: "x"})


def test_a_bignum_tag_stays_an_uninterpreted_tag() -> None:
    bignum = b"\xff" * 200_000  # a 480,000-digit integer if interpreted
    started = time.perf_counter()
    value = loads_strict(cbor2.dumps(cbor2.CBORTag(2, bignum)), tags=True)
    assert time.perf_counter() - started < 0.5
    assert value == cbor2.CBORTag(2, bignum)


def test_nested_tags_count_as_nesting() -> None:
    with pytest.raises(CborError, match="nested deeper than 8"):
        loads_strict(b"\xc1" * 100_000 + b"\x00", tags=True)
    assert loads_strict(b"\xc1" * 8 + b"\x00", tags=True, max_depth=9).tag == 1


def test_the_item_budget_is_enforced() -> None:
    with pytest.raises(CborError, match="more than 10 items"):
        loads_strict(cbor2.dumps(list(range(10))), max_items=10)
    assert loads_strict(cbor2.dumps(list(range(9))), max_items=10) == list(range(9))


# --- CoRIM import goes through the strict decoder ------------------------------------------------

CORIM_HOSTILE: list[tuple[str, bytes, str]] = [
    ("bignum in the extension", cbor2.dumps(cbor2.CBORTag(501, {EXT_KEY: {"name": cbor2.CBORTag(2, b"\xff" * 200_000)}, 1: []})), "unexpected tag 2"),
    ("date in the extension", cbor2.dumps(cbor2.CBORTag(501, {EXT_KEY: {"valid_from": cbor2.CBORTag(1, 10**30)}, 1: []})), "unexpected tag 1"),
    ("unknown tag in the extension", cbor2.dumps(cbor2.CBORTag(501, {EXT_KEY: {"name": cbor2.CBORTag(999, 1)}, 1: []})), "unexpected tag 999"),
    ("tag as a measurement name", cbor2.dumps(cbor2.CBORTag(501, {EXT_KEY: {}, 1: [cbor2.CBORTag(506, cbor2.dumps({4: {0: [[{}, [{0: "initrd", 1: {11: cbor2.CBORTag(35, "(a+)+$")}}]]]}}))]})), "unexpected tag 35"),
    ("deep tags", b"\xd9\x01\xf5" + b"\xc1" * 100_000 + b"\x00", "nested deeper than 16"),
    ("indefinite map", cbor2.dumps(cbor2.CBORTag(501, {}))[:-1] + b"\xbf\xff", "indefinite lengths"),
    ("duplicate key", b"\xd9\x01\xf5\xa2\x00\x01\x00\x02", "duplicate map key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "blob", "needle"), CORIM_HOSTILE, ids=[c[0] for c in CORIM_HOSTILE]
)
def test_hostile_corim_is_a_quick_golden_format_error(case: str, blob: bytes, needle: str) -> None:
    started = time.perf_counter()
    with pytest.raises(GoldenFormatError, match=r"x\.cbor: CoRIM: not valid CBOR: ") as info:
        import_corim(blob, "x.cbor")
    assert time.perf_counter() - started < 0.5
    assert needle in str(info.value) and "\n" not in str(info.value)
