"""The log head a relay signs: where a network's membership log ends, by the relay's clock.

Every page of the log the relay serves carries one (docs/protocol.md §4, "Signed log head"):

    {"network": b64 genesis hash, "seq": int, "hash": b64 hash of entry seq,
     "time": int, "relay_key": b64 Ed25519 key, "sig": b64}

signed by the relay key under purpose ``log-head``. A client checks it against
the relay's key (the one the membership log names), that the entries it was
served end exactly there, and that ``time`` is within ``HEAD_MAX_AGE`` (plus
``CLOCK_SKEW``) of its own clock.

What it buys: a relay that hides the newest entries from a member must sign a
fresh head that omits them. Once the member sees entry ``seq + 1`` dated more
than ``CLOCK_SKEW`` before that head's ``time`` (``withheld``), it holds two
signatures that contradict each other: the relay's head, and the entry's own
signers dating it earlier. That pair is proof of withholding.
"""

from __future__ import annotations

from typing import Any

from .constants import CLOCK_SKEW, HEAD_MAX_AGE
from .encoding import MAX_SAFE_INTEGER, b64d, b64e
from .errors import EncodingError, KeyFormatError, LogHeadError, SignatureError
from .identity import SIGNATURE_BYTES, IdentityKey, IdentityPublicKey

#: signature purpose: signing input ``comity/v1/log-head\\x00 || canonical(head without sig)``
HEAD_PURPOSE = "log-head"
#: SHA-256 digests (network fingerprint, entry hash)
HASH_BYTES = 32
HEAD_FIELDS = frozenset({"network", "seq", "hash", "time", "relay_key"})


def _fail(reason: str, message: str) -> LogHeadError:
    return LogHeadError(message, reason=reason)


def _int(record: dict, name: str) -> int:
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SAFE_INTEGER:
        raise _fail("bad-field", f"log head: {name} must be a non-negative integer")
    return value


def check_log_head(record: Any, *, signed: bool = True) -> dict:
    """Check a log head's shape (not its signature); returns it."""
    if not isinstance(record, dict):
        raise _fail("malformed", "log head must be a JSON object")
    allowed = HEAD_FIELDS | ({"sig"} if signed else set())
    missing = allowed - record.keys()
    if missing:
        raise _fail("missing-field", f"log head lacks field(s): {', '.join(sorted(missing))}")
    if record.keys() - allowed:
        raise _fail("unknown-field", "log head has fields it may not carry")
    _int(record, "seq")
    _int(record, "time")
    try:
        b64d(record["network"], length=HASH_BYTES, what="network")
        b64d(record["hash"], length=HASH_BYTES, what="hash")
        IdentityPublicKey.from_b64(record["relay_key"])
        if signed:
            b64d(record["sig"], length=SIGNATURE_BYTES, what="sig")
    except (EncodingError, KeyFormatError) as exc:
        raise _fail("bad-field", f"log head: {exc.message}") from None
    return record


def make_log_head(relay_key: IdentityKey, *, network: bytes, seq: int, head_hash: bytes,
                  time: int) -> dict:
    """The relay's signed statement that the log of ``network`` ends at ``seq`` at ``time``."""
    record = {"network": b64e(network), "seq": seq, "hash": b64e(head_hash), "time": time,
              "relay_key": relay_key.public.b64()}
    check_log_head(record, signed=False)
    return {**record, "sig": relay_key.sign_b64(HEAD_PURPOSE, record)}


def verify_log_head(record: Any, relay: IdentityPublicKey) -> dict:
    """Shape, that ``relay`` (the relay key the client holds to) signed it, and the signature."""
    check_log_head(record)
    if b64d(record["relay_key"]) != relay.raw:
        raise SignatureError("the log head was signed by another key than the relay's",
                             reason="wrong-key")
    relay.verify(HEAD_PURPOSE, {k: v for k, v in record.items() if k != "sig"}, record["sig"])
    return record


def check_fresh(record: dict, now: int, *, max_age: int = HEAD_MAX_AGE,
                skew: int = CLOCK_SKEW) -> None:
    """Refuse a head dated more than ``max_age + skew`` before ``now``, or ``skew`` after it."""
    age = now - record["time"]
    if age > max_age + skew:
        raise _fail("stale", f"the relay's signed log head is {age // 60} minute(s) old")
    if age < -skew:
        raise _fail("future", f"the relay's signed log head is dated {-age // 60} minute(s) "
                              "ahead of this machine's clock")


def withheld(head: dict, next_entry: dict, *, skew: int = CLOCK_SKEW) -> bool:
    """Whether ``head`` (verified) and the verified entry after it prove withholding: the relay
    signed that the log ended at ``head["seq"]`` at a time when entry ``seq + 1`` already
    existed by more than ``skew``, by its signers' own clock."""
    return (next_entry.get("seq") == head["seq"] + 1
            and next_entry["time"] < head["time"] - skew)
