"""The relay's status statement: where one message's relay receipt chain ends, at a time.

Relay receipts of a message form one chain (keys.receipts), each naming the
previous one. A chain proves nothing about its end: whoever hands it over can
stop before an unfavourable receipt (a ``not-collected``). The status
statement closes it. The relay signs, when the sender asks for the status of
its message:

    {"kind": "message-status", "network", "message_id", "envelope_hash", "sender",
     "time", "chain_head": b64 evidence hash of its newest receipt of the message,
     "log_head": {"seq", "hash"} of the membership log it holds, "relay_key", "sig"}

under purpose ``relay-status``. An evidence bundle carries one, so a verifier
knows the relay's chain as of ``time`` entirely (a receipt left out breaks the
link to ``chain_head``) and the log up to ``log_head`` (a log cut short before a
relay key rotation or a removal shows). Format: docs/protocol.md §9.
"""

from __future__ import annotations

from typing import Any

from .encoding import b64d
from .errors import KeysError, SignatureError
from .identity import IdentityKey, IdentityPublicKey
from .receipts import HASH_BYTES, _b64, _check_common, _fail, _hash_text, _sign, _unsigned

#: signature purpose: a status statement never passes as a receipt, or the reverse
STATUS_PURPOSE = "relay-status"
STATUS_KIND = "message-status"
STATUS_FIELDS = {"kind", "network", "message_id", "envelope_hash", "sender", "time", "chain_head",
                 "log_head", "relay_key", "sig"}


def check_status(record: Any, *, signed: bool = True) -> dict:
    """Check a status statement's shape (not its signature); returns it."""
    what = "relay status statement"
    if not isinstance(record, dict):
        raise _fail("malformed", f"{what} must be a JSON object")
    if record.get("kind") != STATUS_KIND:
        raise _fail("unknown-kind", f"{what}: kind must be {STATUS_KIND}")
    expected = STATUS_FIELDS if signed else STATUS_FIELDS - {"sig"}
    if set(record) != expected:
        raise _fail("bad-field", f"{what} must have exactly the fields {', '.join(sorted(expected))}")
    # network, message_id, envelope_hash, sender, time (and sig): a relay receipt's rules
    _check_common({**record, "prev": None}, what, prev_required=False, signed=signed)
    try:
        IdentityPublicKey.from_b64(record["relay_key"])
    except KeysError:
        raise _fail("bad-field", f"{what}: relay_key is not an Ed25519 public key") from None
    _b64(record, "chain_head", HASH_BYTES, what)
    head = record["log_head"]
    if not isinstance(head, dict) or set(head) != {"seq", "hash"} or not isinstance(head["seq"], int) \
            or isinstance(head["seq"], bool) or head["seq"] < 0:
        raise _fail("bad-field", f"{what}: log_head must be {{\"seq\": int >= 0, \"hash\": b64}}")
    _b64(head, "hash", HASH_BYTES, what)
    return record


def make_status(relay_key: IdentityKey, *, network: bytes | str, message_id: str,
                envelope_hash: bytes | str, sender: str, time: int, chain_head: bytes | str,
                log_head: dict) -> dict:
    """A status statement signed by ``relay_key``."""
    record = {"kind": STATUS_KIND, "network": _hash_text(network), "message_id": message_id,
              "envelope_hash": _hash_text(envelope_hash), "sender": sender, "time": time,
              "chain_head": _hash_text(chain_head), "log_head": dict(log_head),
              "relay_key": relay_key.public.b64()}
    check_status(record, signed=False)
    return _sign(relay_key, STATUS_PURPOSE, record)


def verify_status(record: Any, relay: IdentityPublicKey) -> dict:
    """Check shape, that ``relay`` signed it (the key it names must be ``relay``), and the
    signature. Whether the network's log names ``relay`` is the caller's check."""
    check_status(record)
    if b64d(record["relay_key"]) != relay.raw:
        raise SignatureError("the status statement was signed by another relay key",
                             reason="wrong-key")
    relay.verify(STATUS_PURPOSE, _unsigned(record), record["sig"])
    return record
