"""Canonical JSON, base64url and signing input (keys.encoding)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.encoding import (MAX_SAFE_INTEGER, b64d, b64e, canonical, parse, require_fields,
                           signing_input)
from keys.errors import EncodingError

from .conftest import load_vectors


@pytest.mark.parametrize("case", load_vectors("encoding/canonical.json")["cases"],
                         ids=lambda c: c["description"])
def test_canonical_vectors(case):
    if case["expect"] == "success":
        assert canonical(parse(case["input"])).decode("utf-8") == case["canonical"]
    else:
        with pytest.raises(EncodingError):
            canonical(parse(case["input"]))


@pytest.mark.parametrize("case", load_vectors("encoding/signing_input.json")["cases"],
                         ids=lambda c: c["description"])
def test_signing_input_vectors(case):
    assert signing_input(case["purpose"], case["record"]).hex() == case["signing_input_hex"]


def test_canonical_rules_by_hand():
    # Hand-written expectations, independent of the generated vectors.
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode("utf-8")
    assert canonical([None, True, False, -0]) == b"[null,true,false,0]"
    assert signing_input("message", {}) == b"comity/v1/message\x00{}"


@pytest.mark.parametrize("value", [1.0, float("nan"), 2**53, -(2**53), {1: "x"}, b"bytes", {"s": "\ud800"}])
def test_canonical_refuses(value):
    with pytest.raises(EncodingError):
        canonical(value)


def test_parse_refuses_duplicate_keys_even_nested():
    with pytest.raises(EncodingError, match="duplicate key 'k'"):
        parse('{"a": {"k": 1, "k": 1}}')


def test_parse_refuses_invalid_utf8():
    with pytest.raises(EncodingError, match="UTF-8"):
        parse(b'{"a": "\xff"}')


def test_parse_refuses_deep_nesting():
    with pytest.raises(EncodingError):
        parse("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("purpose", ["", "Message", "a/b", "x" * 64, "msg\x00"])
def test_signing_input_refuses_bad_purpose(purpose):
    with pytest.raises(EncodingError):
        signing_input(purpose, {})


@pytest.mark.parametrize("text", ["AA==", "A", "AB", "+/8", "a b", "AAA=", 5])
def test_b64d_refuses_non_canonical(text):
    # "AB" has non-zero trailing bits: "AA" is the one accepted spelling of b"\x00".
    with pytest.raises(EncodingError):
        b64d(text)


def test_b64d_length_check():
    assert b64d(b64e(b"\x01" * 32), length=32) == b"\x01" * 32
    with pytest.raises(EncodingError, match="must be 32 bytes, not 31"):
        b64d(b64e(b"\x01" * 31), length=32, what="key")


@given(st.binary(max_size=200))
def test_b64_round_trip(data):
    assert b64d(b64e(data)) == data
    assert "=" not in b64e(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_is_a_fixed_point(value):
    encoded = canonical(value)
    assert canonical(parse(encoded)) == encoded
    assert parse(encoded) == value


def test_require_fields():
    require_fields({"a": 1}, {"a"}, {"b"}, what="thing")
    with pytest.raises(EncodingError, match="lacks field"):
        require_fields({}, {"a"}, what="thing")
    with pytest.raises(EncodingError, match="unknown field.*c"):
        require_fields({"a": 1, "c": 2}, {"a"}, what="thing")
    with pytest.raises(EncodingError, match="JSON object"):
        require_fields([], {"a"}, what="thing")
