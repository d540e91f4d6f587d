"""Identity rotations waiting for an administrator, as the administrator's client sees them.

The relay's list is untrusted: each entry is checked here with the same rules as
the log (``LogVerifier.check_rotation_request``: it follows our verified head, the
member's current key and the new key both signed it, the new key's record is
valid), and its id and fingerprints are computed here, never taken from the relay.
Two or more verified requests for one member with different new keys are a
conflict: at most one can be the member's, so someone else holds its current key,
and only the fingerprint the member reads out of band may pick one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace

from keys.encoding import b64e
from keys.errors import KeysError
from keys.identity import IdentityPublicKey, format_fingerprint, parse_fingerprint
from keys.log import LogVerifier, entry_hash

from .errors import UsageError

#: shown where a listed entry is too malformed to name a handle or key
UNREADABLE = "?"


@dataclass(frozen=True)
class PendingRotation:
    id: str                     # entry hash of the entry as listed, computed here
    handle: str
    fingerprint: str            # of the new identity key
    current_fingerprint: str    # of the member's identity key now
    submitted_at: int
    verified: bool              # the entry passes every check but the missing admin signature
    problem: str | None         # why not, when not
    conflict: bool = False      # another verified request for this member has another key
    entry: dict = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict:
        """The documented ``comity pending --json`` shape (docs/cli.md), without the entry."""
        return {k: v for k, v in asdict(self).items() if k != "entry"}


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as typed (any spacing or case) in the printed form; UsageError if invalid."""
    try:
        return format_fingerprint(parse_fingerprint(text))
    except KeysError:
        raise UsageError(f"invalid fingerprint {text!r}: a fingerprint is 40 hexadecimal "
                         "digits, spaces optional") from None


def _text(value) -> str:
    return value if isinstance(value, str) else UNREADABLE


def _check(verifier: LogVerifier, item) -> PendingRotation | None:
    entry = item.get("entry") if isinstance(item, dict) else None
    if not isinstance(entry, dict):
        return None                     # nothing an admin could sign
    body = entry.get("body") if isinstance(entry.get("body"), dict) else {}
    handle = _text(body.get("handle"))
    member = verifier.roster.member(handle) if handle != UNREADABLE else None
    current = format_fingerprint(member.identity_key.fingerprint()) if member else UNREADABLE
    submitted = item.get("submitted_at")
    submitted = submitted if isinstance(submitted, int) and not isinstance(submitted, bool) else 0
    try:
        rotation_id = b64e(entry_hash(entry))
    except KeysError as exc:
        return PendingRotation(UNREADABLE, handle, UNREADABLE, current, submitted, False,
                               f"malformed entry: {exc.message}", entry=entry)
    verified, problem = True, None
    try:
        new = verifier.check_rotation_request(entry)
    except KeysError as exc:
        verified, problem = False, exc.message
        try:
            new = IdentityPublicKey.from_b64(body.get("identity_key"))
        except (KeysError, TypeError, ValueError):
            new = None
    fingerprint = format_fingerprint(new.fingerprint()) if new is not None else UNREADABLE
    return PendingRotation(rotation_id, handle, fingerprint, current, submitted, verified,
                           problem, entry=entry)


def check_listed(verifier: LogVerifier, items: list) -> list[PendingRotation]:
    """The relay's list, each request checked against our verified log; conflicts marked."""
    seen, checked = set(), []
    for item in items if isinstance(items, list) else []:
        pending = _check(verifier, item)
        if pending is None or pending.id in seen:
            continue                    # a relay listing one entry twice changes nothing
        seen.add(pending.id)
        checked.append(pending)
    keys = defaultdict(set)
    for p in checked:
        if p.verified:
            keys[p.handle].add(p.fingerprint)
    return [replace(p, conflict=p.verified and len(keys[p.handle]) > 1) for p in checked]
