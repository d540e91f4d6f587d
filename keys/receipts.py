"""Evidence records: relay receipts and acknowledgement receipts.

Every record names a message (``network``, ``message_id``, ``sender``), the
hash of what it is about, a ``time``, and ``prev``: the evidence hash of the
record it follows. All records of one message form a tree rooted at the
relay's submission receipt (full rules in docs/protocol.md §7):

    submission-accepted -> delivered(a) -> delivered(b) -> not-collected(c)   (relay, one chain)
                              \\-> acknowledged(a)          \\-> rejected(b)   (recipients)

* Relay receipts are signed by the relay key under purpose ``relay-receipt``
  and carry that key, so a client checks it against the pinned fingerprint.
* Acks are signed by the recipient's identity key under ``ack-receipt``; the
  verifier takes the key from the roster (the record carries none).

Shape problems raise ``ReceiptError``, signature problems ``SignatureError``;
both carry a stable ``reason`` code.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

from .constants import HANDLE_PATTERN, MAX_RECIPIENTS
from .encoding import MAX_SAFE_INTEGER, b64d, b64e, canonical
from .errors import EncodingError, KeyFormatError, ReceiptError, SignatureError
from .identity import (FINGERPRINT_BYTES, SIGNATURE_BYTES, IdentityKey, IdentityPublicKey,
                       fingerprint)

#: signature purposes: distinct, so a relay receipt can never pass as an ack or the reverse
RELAY_PURPOSE = "relay-receipt"
ACK_PURPOSE = "ack-receipt"

#: SHA-256 digests everywhere (network, envelope, payload and evidence hashes)
HASH_BYTES = 32

SUBMISSION_KINDS = ("submission-accepted", "submission-rejected")
RECIPIENT_KINDS = ("delivered", "not-collected")
RELAY_KINDS = SUBMISSION_KINDS + RECIPIENT_KINDS
ACK_KINDS = ("acknowledged", "rejected")
#: the refusal reasons of keys.envelope.open, so a client reports exactly what it saw
ACK_REJECT_REASONS = ("bad-signature", "unknown-sender", "not-a-recipient", "fork",
                      "decryption-failed", "removed-member", "bad-envelope", "superseded-key",
                      "retired-key")

#: message ids are opaque to receipts: base64url or hex-and-hyphen text, 16-64 chars
MESSAGE_ID_PATTERN = r"[A-Za-z0-9_-]{16,64}"
#: a relay's refusal code (its wire error code): a short lowercase label
RELAY_REASON_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"

_RELAY_BASE = {"kind", "network", "message_id", "envelope_hash", "sender", "time", "prev",
               "relay_key"}
#: kind -> (required fields, optional fields), "sig" excluded
_RELAY_FIELDS = {
    # log_seq: the relay's log head at acceptance (what shows a message predates a rotation)
    "submission-accepted": (_RELAY_BASE | {"recipients"}, {"log_seq"}),
    "submission-rejected": (_RELAY_BASE | {"recipients", "reason"}, set()),
    "delivered": (_RELAY_BASE | {"recipient"}, set()),
    "not-collected": (_RELAY_BASE | {"recipient"}, set()),
}
_ACK_BASE = {"kind", "network", "message_id", "envelope_hash", "sender", "recipient", "time",
             "prev"}
# newer_head: the recipient's log head, when it shows the sender sealed against a log that had
# already removed a recipient or retired a key (docs/protocol.md §7)
_ACK_FIELDS = {
    "acknowledged": (_ACK_BASE | {"payload_hash"}, {"newer_head"}),
    "rejected": (_ACK_BASE | {"reason"}, {"payload_hash", "newer_head"}),
}


def _fail(reason: str, message: str) -> ReceiptError:
    return ReceiptError(message, reason=reason)


def _show(value: Any) -> str:
    # Records come from the network: never echo an unbounded attacker string.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def canonical_hash(value: Any) -> bytes:
    """SHA-256 of canonical JSON: the envelope hash and the evidence hash."""
    return hashlib.sha256(canonical(value)).digest()


def evidence_hash(record: dict) -> bytes:
    """SHA-256(canonical(record)), signature included: what the next record's ``prev`` names."""
    return canonical_hash(record)


# -- shape checks ---------------------------------------------------------------

def _check_fields(record: Any, table: dict, what: str, signed: bool) -> str:
    if not isinstance(record, dict):
        raise _fail("malformed", f"{what} must be a JSON object")
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in table:
        raise _fail("unknown-kind", f"{what}: unknown kind {_show(kind)}")
    required, optional = table[kind]
    required = required | ({"sig"} if signed else set())
    missing = required - record.keys()
    if missing:
        names = ", ".join(sorted(missing))
        raise _fail("missing-field", f"{what} ({kind}) lacks field(s): {names}")
    unknown = record.keys() - required - optional
    if unknown:
        names = ", ".join(_show(n) for n in sorted(unknown, key=str))
        raise _fail("unknown-field", f"{what} ({kind}) has field(s) it may not carry: {names}")
    return kind


def _b64(record: dict, name: str, length: int, what: str) -> bytes:
    try:
        return b64d(record[name], length=length, what=name)
    except EncodingError as exc:
        raise _fail("bad-field", f"{what}: {exc.message}") from None


def _handle(value: Any, name: str, what: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(HANDLE_PATTERN, value):
        raise _fail("bad-field", f"{what}: {name} {_show(value)} is not a valid handle")


def _check_common(record: dict, what: str, *, prev_required: bool, signed: bool) -> None:
    _b64(record, "network", HASH_BYTES, what)
    _b64(record, "envelope_hash", HASH_BYTES, what)
    mid = record["message_id"]
    if not isinstance(mid, str) or not re.fullmatch(MESSAGE_ID_PATTERN, mid):
        raise _fail("bad-field", f"{what}: message_id {_show(mid)} is not a valid message id")
    _handle(record["sender"], "sender", what)
    t = record["time"]
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise _fail("bad-field", f"{what}: time must be a non-negative integer (Unix seconds)")
    if record["prev"] is None:
        if prev_required:
            raise _fail("bad-field", f"{what} ({record['kind']}): prev must name earlier evidence")
    elif not prev_required:
        raise _fail("bad-field", f"{what} ({record['kind']}): prev must be null (first evidence)")
    else:
        _b64(record, "prev", HASH_BYTES, what)
    if signed:
        _b64(record, "sig", SIGNATURE_BYTES, what)


def check_relay_receipt(record: Any, *, signed: bool = True) -> dict:
    """Check a relay receipt's shape (not its signature); returns it."""
    what = "relay receipt"
    kind = _check_fields(record, _RELAY_FIELDS, what, signed)
    _check_common(record, what, prev_required=kind in RECIPIENT_KINDS, signed=signed)
    try:
        IdentityPublicKey.from_b64(record["relay_key"])
    except (EncodingError, KeyFormatError):
        raise _fail("bad-field", f"{what}: relay_key is not an Ed25519 public key") from None
    if kind in SUBMISSION_KINDS:
        recipients = record["recipients"]
        if not isinstance(recipients, list) or not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise _fail("bad-field", f"{what}: recipients must be a list of 1 to "
                                     f"{MAX_RECIPIENTS} handles")
        for handle in recipients:
            _handle(handle, "recipient", what)
        if len(set(recipients)) != len(recipients):
            raise _fail("bad-field", f"{what}: recipients lists a handle twice")
    else:
        _handle(record["recipient"], "recipient", what)
    if "log_seq" in record:
        seq = record["log_seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SAFE_INTEGER:
            raise _fail("bad-field", f"{what}: log_seq must be a non-negative integer")
    if kind == "submission-rejected":
        reason = record["reason"]
        if not isinstance(reason, str) or not re.fullmatch(RELAY_REASON_PATTERN, reason):
            raise _fail("bad-field", f"{what}: reason {_show(reason)} is not a refusal code")
    return record


def check_ack(record: Any, *, signed: bool = True) -> dict:
    """Check an acknowledgement receipt's shape (not its signature); returns it."""
    what = "acknowledgement"
    kind = _check_fields(record, _ACK_FIELDS, what, signed)
    # An ack always follows the relay's "delivered" receipt for this recipient.
    _check_common(record, what, prev_required=True, signed=signed)
    _handle(record["recipient"], "recipient", what)
    if kind == "rejected":
        reason = record["reason"]
        if not isinstance(reason, str) or reason not in ACK_REJECT_REASONS:
            raise _fail("bad-field", f"{what}: reason {_show(reason)} is not one of "
                                     f"{', '.join(ACK_REJECT_REASONS)}")
        if reason == "decryption-failed" and "payload_hash" in record:
            raise _fail("unknown-field", f"{what}: a decryption-failed rejection has no "
                                         "payload_hash (nothing was decrypted)")
    if "payload_hash" in record:
        _b64(record, "payload_hash", HASH_BYTES, what)
    if "newer_head" in record:
        _check_head_ref(record["newer_head"], what)
    return record


def _check_head_ref(head: Any, what: str) -> None:
    """``{"seq", "hash"}``: a position in the membership log, as a payload's roster_head."""
    if not isinstance(head, dict) or set(head) != {"seq", "hash"}:
        raise _fail("bad-field", f"{what}: newer_head must be an object with seq and hash")
    seq = head["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SAFE_INTEGER:
        raise _fail("bad-field", f"{what}: newer_head.seq must be a non-negative integer")
    _b64(head, "hash", HASH_BYTES, what)


def check_evidence(record: Any) -> dict:
    """Shape-check a signed relay receipt or ack, chosen by its ``kind``."""
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind in ACK_KINDS:
        return check_ack(record)
    if kind in RELAY_KINDS or not isinstance(record, dict):
        return check_relay_receipt(record)
    raise _fail("unknown-kind", f"evidence record: unknown kind {_show(kind)}")


# -- making and verifying -------------------------------------------------------

def _hash_text(value: bytes | str | None) -> str | None:
    # Hash fields may be given raw (32 bytes) or as their base64url text.
    if value is None or isinstance(value, str):
        return value
    return b64e(bytes(value))


def _sign(key: IdentityKey, purpose: str, record: dict) -> dict:
    return {**record, "sig": key.sign_b64(purpose, record)}


def _unsigned(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "sig"}


def make_relay_receipt(relay_key: IdentityKey, kind: str, *, network: bytes | str,
                       message_id: str, envelope_hash: bytes | str, sender: str, time: int,
                       prev: bytes | str | None = None, recipients: list[str] | None = None,
                       recipient: str | None = None, reason: str | None = None,
                       log_seq: int | None = None) -> dict:
    """A relay receipt signed by ``relay_key``; fields not given are left out."""
    record: dict[str, Any] = {
        "kind": kind, "network": _hash_text(network), "message_id": message_id,
        "envelope_hash": _hash_text(envelope_hash), "sender": sender, "time": time,
        "prev": _hash_text(prev), "relay_key": relay_key.public.b64(),
    }
    for name, value in (("recipients", recipients), ("recipient", recipient), ("reason", reason),
                        ("log_seq", log_seq)):
        if value is not None:
            record[name] = list(value) if name == "recipients" else value
    check_relay_receipt(record, signed=False)
    return _sign(relay_key, RELAY_PURPOSE, record)


def verify_relay_receipt(record: Any, relay: IdentityPublicKey | bytes) -> dict:
    """Check shape, that the receipt comes from ``relay`` (its key or 20-byte pinned
    fingerprint), and the signature. Returns the record."""
    check_relay_receipt(record)
    raw = b64d(record["relay_key"])
    if isinstance(relay, IdentityPublicKey):
        ours = relay.raw == raw
    elif isinstance(relay, (bytes, bytearray)) and len(relay) == FINGERPRINT_BYTES:
        ours = fingerprint(raw) == bytes(relay)
    else:
        raise TypeError("relay must be an IdentityPublicKey or a 20-byte fingerprint")
    if not ours:
        raise SignatureError("the receipt was signed by a different relay key than the one "
                             "pinned for this network", reason="wrong-key")
    IdentityPublicKey(raw).verify(RELAY_PURPOSE, _unsigned(record), record["sig"])
    return record


def make_ack(identity: IdentityKey, kind: str, *, network: bytes | str, message_id: str,
             envelope_hash: bytes | str, sender: str, recipient: str, time: int,
             prev: bytes | str, payload_hash: bytes | str | None = None,
             reason: str | None = None, newer_head: dict | None = None) -> dict:
    """An acknowledgement (``acknowledged``/``rejected``) signed by the recipient."""
    record: dict[str, Any] = {
        "kind": kind, "network": _hash_text(network), "message_id": message_id,
        "envelope_hash": _hash_text(envelope_hash), "sender": sender, "recipient": recipient,
        "time": time, "prev": _hash_text(prev),
    }
    if payload_hash is not None:
        record["payload_hash"] = _hash_text(payload_hash)
    if reason is not None:
        record["reason"] = reason
    if newer_head is not None:
        record["newer_head"] = dict(newer_head)
    check_ack(record, signed=False)
    return _sign(identity, ACK_PURPOSE, record)


def verify_ack(record: Any, identity: IdentityPublicKey) -> dict:
    """Check shape and the signature under the recipient's identity key; returns it."""
    check_ack(record)
    identity.verify(ACK_PURPOSE, _unsigned(record), record["sig"])
    return record


# -- chains ---------------------------------------------------------------------

def verify_chain(records: Iterable[dict]) -> dict[str, list[dict]]:
    """Check the ``prev`` links of evidence records (any messages, any order).

    Structure only: signatures are checked separately (``verify_relay_receipt``,
    ``verify_ack``). Returns ``{message_id: records in chain order}``.
    """
    by_message: dict[str, dict[bytes, dict]] = {}
    for record in records:
        check_evidence(record)
        # An exact duplicate is the same evidence twice, not a fork: keep one.
        by_message.setdefault(record["message_id"], {})[evidence_hash(record)] = record
    return {mid: _one_chain(recs) for mid, recs in by_message.items()}


def _one_chain(by_hash: dict[bytes, dict]) -> list[dict]:
    roots = [r for r in by_hash.values() if r["kind"] in SUBMISSION_KINDS]
    if not roots:
        raise _fail("broken-chain", "the evidence lacks the relay's submission receipt")
    if len(roots) > 1:
        raise _fail("chain-fork", "the evidence has two submission receipts for one message")
    root = roots[0]
    successor: dict[bytes, dict] = {}    # relay receipt hash -> next relay receipt
    acks: dict[bytes, dict] = {}         # delivered receipt hash -> its ack
    settled: set[str] = set()            # recipients with a delivered/not-collected receipt
    for record in by_hash.values():
        for name in ("network", "sender", "envelope_hash"):
            # A rejection may name the hash of what actually arrived: a different hash
            # there is the evidence that the envelope was altered on the way.
            if name == "envelope_hash" and record["kind"] == "rejected":
                continue
            if record[name] != root[name]:
                raise _fail("chain-mismatch", f"evidence records disagree on {name}")
        if record is root:
            continue
        if record["recipient"] not in root["recipients"]:
            raise _fail("chain-mismatch", f"{record['recipient']} is not a recipient of the "
                                          "message")
        prev = b64d(record["prev"])
        parent = by_hash.get(prev)
        if parent is None:
            raise _fail("broken-chain", f"a {record['kind']} record follows evidence that is "
                                        "missing")
        if parent["time"] > record["time"]:
            raise _fail("broken-chain", f"a {record['kind']} record is dated before the "
                                        "evidence it follows")
        if record["kind"] in ACK_KINDS:
            if parent["kind"] != "delivered" or parent["recipient"] != record["recipient"]:
                raise _fail("broken-chain", "an acknowledgement must follow the delivered "
                                            "receipt of the same recipient")
            if prev in acks:
                raise _fail("chain-fork", f"{record['recipient']} acknowledged twice")
            acks[prev] = record
            continue
        if parent["kind"] not in ("submission-accepted",) + RECIPIENT_KINDS:
            raise _fail("broken-chain", f"a {record['kind']} receipt follows a "
                                        f"{parent['kind']} record")
        if prev in successor:
            raise _fail("chain-fork", "the relay issued two receipts after the same one")
        if record["recipient"] in settled:
            raise _fail("chain-fork", f"two delivery outcomes for {record['recipient']}")
        successor[prev] = record
        settled.add(record["recipient"])
    ordered, current = [root], root
    while (h := evidence_hash(current)) in successor or h in acks:
        if h in acks:
            ordered.append(acks[h])
        if h not in successor:
            break
        current = successor[h]
        ordered.append(current)
    if len(ordered) != len(by_hash):     # unreachable with SHA-256; kept as a guard
        raise _fail("broken-chain", "some evidence is not linked to the submission receipt")
    return ordered
