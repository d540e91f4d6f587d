"""Ed25519 identities, fingerprints and safety numbers (keys.identity)."""

from __future__ import annotations

import pytest

from keys.encoding import b64d
from keys.errors import KeyFormatError, SignatureError
from keys.identity import (IdentityKey, IdentityPublicKey, format_fingerprint,
                           parse_fingerprint, safety_number)

from .conftest import load_vectors


@pytest.mark.parametrize("case", load_vectors("identity/rfc8032.json")["cases"],
                         ids=lambda c: c["description"])
def test_rfc8032_vectors(case):
    key = IdentityKey.from_seed(bytes.fromhex(case["secret_key"]))
    assert key.public.raw.hex() == case["public_key"]
    message, signature = bytes.fromhex(case["message"]), bytes.fromhex(case["signature"])
    assert key.sign_raw(message) == signature
    IdentityPublicKey(bytes.fromhex(case["public_key"])).verify_raw(message, signature)
    with pytest.raises(SignatureError):
        key.public.verify_raw(message + b"\x00", signature)


@pytest.mark.parametrize("case", load_vectors("identity/comity_signatures.json")["cases"],
                         ids=lambda c: c["description"])
def test_comity_signature_vectors(case):
    key = IdentityKey.from_seed(bytes.fromhex(case["seed"]))
    public = IdentityPublicKey.from_b64(case["public_key"])
    assert key.public == public
    assert format_fingerprint(public.fingerprint()) == case["fingerprint"]
    if case["expect"] == "success":
        public.verify(case["purpose"], case["record"], case["signature"])
        assert key.sign_b64(case["purpose"], case["record"]) == case["signature"]
    else:
        with pytest.raises(SignatureError) as info:
            public.verify(case["purpose"], case["record"], case["signature"])
        assert info.value.reason == case["expect"]


def test_safety_number_vector_and_symmetry():
    doc = load_vectors("identity/comity_signatures.json")["safety_number"]
    a, b = b64d(doc["a"]), b64d(doc["b"])
    assert safety_number(a, b) == safety_number(b, a) == doc["number"]
    groups = doc["number"].split(" ")
    assert len(groups) == 6 and all(len(g) == 5 and g.isdigit() for g in groups)


def test_fingerprint_format_round_trip():
    key = IdentityKey.generate()
    printed = format_fingerprint(key.public.fingerprint())
    assert len(printed.split(" ")) == 10
    assert parse_fingerprint(printed.upper()) == key.public.fingerprint()
    with pytest.raises(KeyFormatError):
        parse_fingerprint("abcd")


def test_signature_bound_to_record_and_purpose():
    key = IdentityKey.generate()
    sig = key.sign("message", {"a": 1})
    key.public.verify("message", {"a": 1}, sig)
    for purpose, record in (("message", {"a": 2}), ("ack-receipt", {"a": 1})):
        with pytest.raises(SignatureError):
            key.public.verify(purpose, record, sig)
    with pytest.raises(SignatureError):
        key.public.verify("message", {"a": 1}, "not base64!")
    with pytest.raises(SignatureError):
        key.public.verify("message", {"a": 1}, sig[:63])


def test_secrets_not_in_repr():
    key = IdentityKey.generate()
    assert key.seed().hex() not in repr(key)
    assert repr(key).startswith("IdentityKey(") and format_fingerprint(key.public.fingerprint()) in repr(key)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, "x" * 32])
def test_bad_public_keys(raw):
    with pytest.raises(KeyFormatError):
        IdentityPublicKey(raw)


@pytest.mark.parametrize("signature", [5, None, ["x"], {"sig": "x"}])
def test_verify_refuses_signature_of_wrong_type(signature):
    key = IdentityKey.generate()
    with pytest.raises(SignatureError):
        key.public.verify("message", {}, signature)
