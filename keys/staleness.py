"""What a recipient's newer log says about a message sealed against an older head.

A sender seals against the roster head it verified (the payload's ``roster_head``). The
relay may have withheld newer entries from it, or the log may simply have moved on since.
A recipient whose own log (``latest``) is further on applies three rules, steps 14-16 of
``keys.envelope.open`` (docs/protocol.md §5.7):

* **the signing key** (``check_signer``): if the sender was removed, or its identity key
  replaced, at an entry after the head it named, the signature counts only when the relay's
  signed acceptance shows the message was submitted before that entry (``accepted_before``);
  else ``removed-member`` / ``superseded-key``. A thief with an old key cannot sign "before".
* **the wrapped key** (``check_wrap``): content wrapped to an encryption key version of ours
  that the log had retired before the sender's head, or more than ``ROTATION_WINDOW`` before
  the message was sealed or accepted (``sealed_at``), is refused: ``retired-key``.
* **anything else the sender missed** (``stale_changes``): a recipient removed or a key
  replaced in the log before the message was sealed or accepted. The message still opens; the
  recipient reports its newer head in the acknowledgement so the sender learns of it.

Entries carry their signers' ``time`` (``Roster.time``); the relay's acceptance carries its
``time`` and ``log_seq``. All comparisons allow ``CLOCK_SKEW``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .constants import CLOCK_SKEW, ROTATION_WINDOW
from .encoding import b64e
from .errors import EnvelopeError, KeysError
from .identity import IdentityPublicKey
from .receipts import canonical_hash, verify_relay_receipt
from .roster import Member, Roster

RosterAt = Callable[[int], Roster]


@dataclass(frozen=True)
class Change:
    """One log entry the sender had not seen when it sealed: ``what`` happened to ``handle``."""

    seq: int
    time: int
    handle: str
    what: str          # "removed", "encryption-key" or "identity-key"

    def as_json(self) -> dict:
        return {"seq": self.seq, "time": self.time, "handle": self.handle, "change": self.what}


def first_seq(lo: int, hi: int, holds: Callable[[int], bool]) -> int | None:
    """The smallest seq in ``[lo, hi]`` where ``holds`` (false, then true for good) is true."""
    if lo > hi or not holds(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def replaced_at(roster_at: RosterAt, handle: str, key: IdentityPublicKey, after: int,
                upto: int) -> int | None:
    """The entry (after ``after``) that replaced ``handle``'s identity key ``key``, if any.
    Identity keys are never reused, so once replaced it stays replaced."""
    def gone(seq: int) -> bool:
        member = roster_at(seq).member(handle)
        return member is not None and member.identity_key != key
    return first_seq(after + 1, upto, gone)


def retired_at(roster_at: RosterAt, handle: str, version: int, upto: int) -> int | None:
    """The entry that gave ``handle`` an encryption key newer than ``version``, if any
    (versions only grow, so a retired version never comes back)."""
    def retired(seq: int) -> bool:
        member = roster_at(seq).member(handle)
        return member is not None and member.encryption_key_version > version
    return first_seq(0, upto, retired)


def acceptance_for(record: Any, envelope: Mapping[str, Any],
                   relay_key: IdentityPublicKey | None) -> dict | None:
    """The relay's ``submission-accepted`` receipt for exactly this envelope, verified under
    the pinned ``relay_key``; ``None`` for anything else (absent, forged, another message)."""
    if record is None or relay_key is None:
        return None
    try:
        verify_relay_receipt(record, relay_key)
        digest = b64e(canonical_hash(dict(envelope)))     # = keys.envelope.envelope_hash
    except KeysError:
        return None
    if (record["kind"] != "submission-accepted" or record["message_id"] != envelope["id"]
            or record["envelope_hash"] != digest or record["network"] != envelope["network"]
            or record["sender"] != envelope["sender"]):
        return None
    return record


def accepted_before(acceptance: dict | None, seq: int, roster_at: RosterAt, latest: Roster,
                    now: int | None) -> bool:
    """Whether the verified ``acceptance`` shows the message reached the relay before entry
    ``seq``."""
    if acceptance is None or "log_seq" not in acceptance or acceptance["log_seq"] >= seq:
        return False
    # An honest relay accepted it before appending entry seq, so not after that entry's own
    # time: a later time beside an earlier log_seq is the relay contradicting itself.
    if acceptance["time"] > roster_at(seq).time + CLOCK_SKEW:
        return False
    # An honest relay drops an envelope after the retention period: an older acceptance is
    # not one it could still be delivering (this bounds a backdated receipt).
    if now is not None and now > acceptance["time"] + latest.policy.retention + CLOCK_SKEW:
        return False
    return True


def sealed_at(payload: Mapping[str, Any], acceptance: dict | None) -> int:
    """The latest of the sender's own clock (``created``) and the relay's acceptance time:
    neither the sender alone nor the relay alone can make a message look older."""
    return max(payload["created"], acceptance["time"] if acceptance else 0)


def check_signer(sender: Member, head_seq: int, latest: Roster, roster_at: RosterAt,
                 acceptance: dict | None, now: int | None) -> None:
    """Step 14: a signing key removed or replaced since the sender's head counts only if the
    relay accepted the message before that entry."""
    current = latest.member(sender.handle)
    removed = current.removed_seq if current is not None else None
    if removed is not None and removed > head_seq and not accepted_before(
            acceptance, removed, roster_at, latest, now):
        raise EnvelopeError(f"{sender.handle!r} was removed at log entry {removed}, and nothing "
                            "shows the message reached the relay before", reason="removed-member")
    replaced = replaced_at(roster_at, sender.handle, sender.identity_key, head_seq, latest.seq)
    if replaced is not None and not accepted_before(acceptance, replaced, roster_at, latest, now):
        raise EnvelopeError(f"signed by {sender.handle}'s identity key that log entry {replaced} "
                            "replaced, and nothing shows the message reached the relay before",
                            reason="superseded-key")


def check_wrap(recipient: str, version: int, payload: Mapping[str, Any], latest: Roster,
               roster_at: RosterAt, acceptance: dict | None) -> None:
    """Step 15: content wrapped to one of our encryption keys the log had retired."""
    retired = retired_at(roster_at, recipient, version, latest.seq)
    if retired is None:
        return
    head_seq = payload["roster_head"]["seq"]
    if retired <= head_seq:
        raise EnvelopeError(f"wrapped to encryption key version {version}, which log entry "
                            f"{retired} retired before the head the sender named",
                            reason="retired-key")
    late = sealed_at(payload, acceptance) - roster_at(retired).time
    if late > ROTATION_WINDOW:
        raise EnvelopeError(f"wrapped to encryption key version {version}, which log entry "
                            f"{retired} retired {late // 60} minute(s) before the message was "
                            "sealed or accepted: the sender was shown an old log",
                            reason="retired-key")


def stale_changes(payload: Mapping[str, Any], roster_at: RosterAt, latest: Roster,
                  acceptance: dict | None) -> tuple[Change, ...]:
    """Step 16: what the sender's head missed that was in the log before the message was
    sealed or accepted (a later change is no fault of the sender: it is not reported)."""
    head_seq = payload["roster_head"]["seq"]
    if latest.seq <= head_seq:
        return ()
    then = roster_at(head_seq)
    found: list[tuple[int, str, str]] = []
    for handle in payload["recipients"]:
        before, now = then.member(handle), latest.member(handle)
        if before is None or now is None:
            continue
        if now.removed_seq is not None and now.removed_seq > head_seq:
            found.append((now.removed_seq, handle, "removed"))
        if now.encryption_key_version != before.encryption_key_version:
            seq = retired_at(roster_at, handle, before.encryption_key_version, latest.seq)
            found.append((seq, handle, "encryption-key"))
    sender = then.member(payload["sender"])
    if sender is not None:
        seq = replaced_at(roster_at, sender.handle, sender.identity_key, head_seq, latest.seq)
        if seq is not None:
            found.append((seq, sender.handle, "identity-key"))
    sealed = sealed_at(payload, acceptance)
    known_seq = acceptance.get("log_seq", -1) if acceptance else -1
    changes = []
    for seq, handle, what in sorted(found):
        time = roster_at(seq).time
        if time <= sealed or seq <= known_seq:
            changes.append(Change(seq, time, handle, what))
    return tuple(changes)
