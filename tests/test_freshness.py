"""client/freshness.py: the relay's acceptance counts only when the delivery chains from it."""

from __future__ import annotations

from types import SimpleNamespace

from client.errors import TrustError
from client.freshness import chained_acceptance
from keys.errors import KeysError
from keys.identity import IdentityKey
from keys.receipts import evidence_hash, make_relay_receipt, verify_relay_receipt

RELAY = IdentityKey.from_seed(bytes(range(32)))
FIELDS = dict(network=bytes(32), message_id="M" * 22, envelope_hash=b"\x01" * 32, sender="alice")


def receipts(key=RELAY):
    accepted = make_relay_receipt(key, "submission-accepted", **FIELDS, time=100,
                                  recipients=["bob", "carol"], log_seq=4)
    to_bob = make_relay_receipt(key, "delivered", **FIELDS, time=101, recipient="bob",
                                prev=evidence_hash(accepted))
    to_carol = make_relay_receipt(key, "delivered", **FIELDS, time=102, recipient="carol",
                                  prev=evidence_hash(to_bob))
    return accepted, to_bob, to_carol


def _check(receipt):
    # as RelayClient.check_receipt: here the log names RELAY's key
    try:
        return verify_relay_receipt(receipt, RELAY.public)
    except KeysError as exc:
        raise TrustError(exc.message) from None


RELAY_CLIENT = SimpleNamespace(check_receipt=_check)


def test_the_submission_counts_when_the_delivery_chains_from_it():
    accepted, to_bob, to_carol = receipts()
    assert chained_acceptance(RELAY_CLIENT, "bob", accepted, [], to_bob) is accepted
    assert chained_acceptance(RELAY_CLIENT, "carol", accepted, [to_bob], to_carol) is accepted


def test_the_submission_does_not_count_otherwise():
    accepted, to_bob, to_carol = receipts()
    other, _, _ = receipts(IdentityKey.generate())
    for handle, submission, chain, delivery in [
            ("carol", accepted, [], to_carol),               # the link between is missing
            ("bob", accepted, [], to_carol),                 # someone else's delivery
            ("bob", other, [], to_bob),                      # not a key the log names
            ("bob", None, [], to_bob), ("bob", accepted, None, to_bob),
            ("bob", accepted, [], None), ("bob", accepted, ["junk"], to_bob)]:
        assert chained_acceptance(RELAY_CLIENT, handle, submission, chain, delivery) is None
