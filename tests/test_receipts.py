"""Relay receipts, acknowledgement receipts and evidence chains (keys.receipts)."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.encoding import b64e, canonical
from keys.errors import ReceiptError, SignatureError
from keys.identity import IdentityKey, IdentityPublicKey
from keys.receipts import (ACK_KINDS, ACK_REJECT_REASONS, RELAY_KINDS, check_evidence,
                           evidence_hash, make_ack, make_relay_receipt, verify_ack,
                           verify_chain, verify_relay_receipt)

from .conftest import VECTORS, load_vectors

RELAY_VECTORS = load_vectors("receipts/relay_receipts.json")
ACK_VECTORS = load_vectors("receipts/acks.json")
CHAIN_VECTORS = load_vectors("receipts/chains.json")


def _outcome(fn, *args) -> str:
    try:
        fn(*args)
    except (ReceiptError, SignatureError) as exc:
        assert exc.reason, "every refusal carries a reason code"
        return exc.reason
    return "success"


@pytest.mark.parametrize("case", RELAY_VECTORS["cases"], ids=lambda c: c["description"])
def test_relay_receipt_vectors(case):
    if "verify_with_fingerprint" in case:
        pinned = bytes.fromhex(case["verify_with_fingerprint"])
    else:
        pinned = IdentityPublicKey.from_b64(case["verify_with_key"])
    assert _outcome(verify_relay_receipt, case["record"], pinned) == case["expect"]


def test_relay_receipt_signing_input_and_hash_are_pinned():
    accepted = RELAY_VECTORS["cases"][0]["record"]
    unsigned = {k: v for k, v in accepted.items() if k != "sig"}
    expected = b"comity/v1/relay-receipt\x00" + canonical(unsigned)
    assert expected.hex() == RELAY_VECTORS["signing_input_hex"]
    assert b64e(hashlib.sha256(canonical(accepted)).digest()) == RELAY_VECTORS["evidence_hash"]
    assert b64e(evidence_hash(accepted)) == RELAY_VECTORS["evidence_hash"]


@pytest.mark.parametrize("case", ACK_VECTORS["cases"], ids=lambda c: c["description"])
def test_ack_vectors(case):
    key = IdentityPublicKey.from_b64(case["identity_key"])
    assert _outcome(verify_ack, case["record"], key) == case["expect"]


@pytest.mark.parametrize("case", CHAIN_VECTORS["cases"], ids=lambda c: c["description"])
def test_chain_vectors(case):
    records = CHAIN_VECTORS["records"]
    chosen = [copy.deepcopy(records[name]) for name in case["records"]]
    if case["expect"] != "success":
        with pytest.raises(ReceiptError) as info:
            verify_chain(chosen)
        assert info.value.reason == case["expect"]
        return
    (message_id, ordered), = verify_chain(chosen).items()
    by_hash = {h: name for name, h in CHAIN_VECTORS["evidence_hashes"].items()}
    assert [by_hash[b64e(evidence_hash(r))] for r in ordered] == case["order"]
    assert message_id == chosen[0]["message_id"]


def test_chain_vector_records_all_carry_valid_signatures():
    """The chain cases fail for their links only, never for a bad record."""
    keys = {k: IdentityPublicKey.from_b64(v) for k, v in CHAIN_VECTORS["keys"].items()}
    for name, record in CHAIN_VECTORS["records"].items():
        assert b64e(evidence_hash(record)) == CHAIN_VECTORS["evidence_hashes"][name]
        if record["kind"] in RELAY_KINDS:
            relay = keys["rogue-relay"] if name.startswith("rogue") else keys["relay"]
            verify_relay_receipt(record, relay)
        else:
            verify_ack(record, keys[record["recipient"]])


@pytest.mark.parametrize("relative", ["relay_receipts.json", "acks.json", "chains.json"])
def test_generator_is_deterministic(tmp_path, relative):
    script = VECTORS / "receipts" / "generate.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    assert (tmp_path / relative).read_bytes() == (VECTORS / "receipts" / relative).read_bytes()


# -- building records -------------------------------------------------------------

RELAY = IdentityKey.from_seed(bytes(range(32)))
BOB = IdentityKey.from_seed(bytes(range(1, 33)))
COMMON = {"network": bytes(32), "message_id": "m" * 22, "envelope_hash": b"\x01" * 32,
          "sender": "alice.mj"}
PREV = b"\x02" * 32


def _relay(kind: str, **extra) -> dict:
    fields = {"submission-accepted": {"recipients": ["bob.fgr", "carol.pj"]},
              "submission-rejected": {"recipients": ["bob.fgr"], "reason": "too-large"},
              "delivered": {"recipient": "bob.fgr", "prev": PREV},
              "not-collected": {"recipient": "bob.fgr", "prev": PREV}}[kind]
    return make_relay_receipt(RELAY, kind, **COMMON, time=100, **{**fields, **extra})


def _ack(kind: str, **extra) -> dict:
    fields = {"acknowledged": {"payload_hash": b"\x03" * 32},
              "rejected": {"reason": "unknown-sender", "payload_hash": b"\x03" * 32}}[kind]
    return make_ack(BOB, kind, **COMMON, recipient="bob.fgr", time=120, prev=PREV,
                    **{**fields, **extra})


def _resigned(key: IdentityKey, purpose: str, record: dict) -> dict:
    body = {k: v for k, v in record.items() if k != "sig"}
    return {**body, "sig": key.sign_b64(purpose, body)}


@pytest.mark.parametrize("kind", RELAY_KINDS)
def test_every_relay_kind_round_trips(kind):
    record = _relay(kind)
    assert verify_relay_receipt(record, RELAY.public) is record
    assert verify_relay_receipt(record, RELAY.public.fingerprint()) is record
    assert record["relay_key"] == RELAY.public.b64()
    assert record["network"] == b64e(bytes(32))     # raw hashes are written as base64url


@pytest.mark.parametrize("kind", ACK_KINDS)
def test_every_ack_kind_round_trips(kind):
    record = _ack(kind)
    assert verify_ack(record, BOB.public) is record
    with pytest.raises(SignatureError):
        verify_ack(record, RELAY.public)


def test_hash_fields_accept_raw_bytes_or_text():
    assert _relay("delivered") == _relay("delivered", prev=b64e(PREV))


@pytest.mark.parametrize("kind", RELAY_KINDS)
def test_each_missing_relay_field_is_refused(kind):
    record = _relay(kind)
    for name in record:
        partial = {k: v for k, v in record.items() if k != name}
        expect = "unknown-kind" if name == "kind" else "missing-field"
        with pytest.raises(ReceiptError) as info:
            verify_relay_receipt(partial, RELAY.public)
        assert info.value.reason == expect, name


@pytest.mark.parametrize("kind", ACK_KINDS)
def test_each_missing_ack_field_is_refused(kind):
    record = _ack(kind)
    for name in record:
        partial = {k: v for k, v in record.items() if k != name}
        if name == "payload_hash" and kind == "rejected":
            continue                                    # optional on rejections
        expect = "unknown-kind" if name == "kind" else "missing-field"
        with pytest.raises(ReceiptError) as info:
            verify_ack(partial, BOB.public)
        assert info.value.reason == expect, name


@pytest.mark.parametrize("kind", RELAY_KINDS + ACK_KINDS)
@pytest.mark.parametrize("bad", [-1, "", 1.5, None, ["x"], {"a": 1}, True])
def test_each_field_with_a_wrong_type_or_value_is_refused(kind, bad):
    record = _relay(kind) if kind in RELAY_KINDS else _ack(kind)
    for name in record:
        if name == "kind" or (name == "prev" and bad is None and kind in (
                "submission-accepted", "submission-rejected")):
            continue                                    # null is the valid submission prev
        changed = {**record, name: bad}
        with pytest.raises(ReceiptError) as info:
            check_evidence(changed)
        assert info.value.reason == "bad-field", (name, bad)


@pytest.mark.parametrize("record", [None, [], "receipt", 7])
def test_non_objects_are_refused(record):
    with pytest.raises(ReceiptError) as info:
        check_evidence(record)
    assert info.value.reason in ("malformed", "unknown-kind")


def test_make_refuses_what_verify_would_refuse():
    with pytest.raises(ReceiptError, match="unknown kind"):
        make_relay_receipt(RELAY, "acknowledged", **COMMON, time=1, recipient="bob.fgr")
    with pytest.raises(ReceiptError) as info:
        make_relay_receipt(RELAY, "delivered", **COMMON, time=1, recipients=["bob.fgr"],
                           prev=PREV)
    assert info.value.reason == "missing-field"
    with pytest.raises(ReceiptError) as info:
        make_ack(BOB, "rejected", **COMMON, recipient="bob.fgr", time=1, prev=PREV,
                 reason="decryption-failed", payload_hash=PREV)
    assert info.value.reason == "unknown-field"
    for reason in ACK_REJECT_REASONS:
        payload = None if reason == "decryption-failed" else PREV
        make_ack(BOB, "rejected", **COMMON, recipient="bob.fgr", time=1, prev=PREV,
                 reason=reason, payload_hash=payload)


def test_error_messages_do_not_echo_long_attacker_strings():
    record = {**_relay("delivered"), "kind": "x" * 10_000}
    with pytest.raises(ReceiptError) as info:
        check_evidence(record)
    assert len(str(info.value)) < 200
    record = {**_relay("delivered"), "y" * 10_000: 1}
    with pytest.raises(ReceiptError) as info:
        check_evidence(record)
    assert len(str(info.value)) < 200


def test_relay_receipt_is_not_an_ack_and_back():
    relay_sig_as_ack = _resigned(RELAY, "relay-receipt", _ack("acknowledged"))
    with pytest.raises(SignatureError):
        verify_ack(relay_sig_as_ack, RELAY.public)


def test_pinned_relay_must_be_a_key_or_fingerprint():
    with pytest.raises(TypeError):
        verify_relay_receipt(_relay("delivered"), b"\x00" * 32)


def test_chain_groups_messages_and_ignores_exact_duplicates():
    first = _relay("submission-accepted")
    delivered = make_relay_receipt(RELAY, "delivered", **COMMON, time=150,
                                   prev=evidence_hash(first), recipient="bob.fgr")
    other = make_relay_receipt(RELAY, "submission-accepted", **{**COMMON, "message_id": "n" * 22},
                               time=90, recipients=["dave.mp"])
    chains = verify_chain([delivered, other, first, copy.deepcopy(first)])
    assert chains == {"m" * 22: [first, delivered], "n" * 22: [other]}
    assert verify_chain([]) == {}


def test_ack_by_another_recipient_on_bobs_delivery_is_refused():
    first = _relay("submission-accepted")
    delivered = make_relay_receipt(RELAY, "delivered", **COMMON, time=150,
                                   prev=evidence_hash(first), recipient="bob.fgr")
    carol = make_ack(BOB, "acknowledged", **COMMON, recipient="carol.pj", time=160,
                     prev=evidence_hash(delivered), payload_hash=PREV)
    with pytest.raises(ReceiptError) as info:
        verify_chain([first, delivered, carol])
    assert info.value.reason == "broken-chain"
    twice = [make_ack(BOB, "acknowledged", **COMMON, recipient="bob.fgr", time=t,
                      prev=evidence_hash(delivered), payload_hash=PREV) for t in (160, 161)]
    with pytest.raises(ReceiptError) as info:
        verify_chain([first, delivered, *twice])
    assert info.value.reason == "chain-fork"


@given(field=st.sampled_from(["time", "sender", "recipient", "message_id", "envelope_hash",
                              "network", "prev"]),
       data=st.data())
def test_any_change_to_a_signed_field_breaks_the_signature(field, data):
    record = _relay("delivered")
    if field == "time":
        new = data.draw(st.integers(0, 2**53 - 1).filter(lambda t: t != record["time"]))
    elif field in ("sender", "recipient"):
        new = data.draw(st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
                        .filter(lambda h: h != record[field]))
    elif field == "message_id":
        new = data.draw(st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True)
                        .filter(lambda m: m != record[field]))
    else:
        new = b64e(data.draw(st.binary(min_size=32, max_size=32)))
        if new == record[field]:
            return
    with pytest.raises(SignatureError) as info:
        verify_relay_receipt({**record, field: new}, RELAY.public)
    assert info.value.reason == "bad-signature"
