"""The membership log: signed, hash-chained entries from which every client derives the roster.

Wire format and rules are in docs/protocol.md §4. In short, an entry is
``{"seq", "prev", "kind", "time", "body", "signatures": [{"key", "sig"}]}``;
each signature covers the entry without ``signatures`` under purpose
``log-entry``; the entry hash is SHA-256 of the canonical *full* entry, so the
chain commits to the signatures too; the hash of entry 0 (genesis) is the
network fingerprint that members pin out of band.

``LogVerifier`` checks one entry at a time against the state left by the
entries before it and applies it only if every rule holds, so a refused entry
changes nothing. It keeps each member's versions by seq, so ``roster_at(seq)``
is a lookup, not a replay. Every refusal is a ``LogError`` whose ``reason``
is a stable code (listed in docs/protocol.md §4).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from typing import Any, Iterable

from .encoding import b64e
from .errors import KeysError, LogError  # noqa: F401  (LogError: re-exported)
from .identity import IdentityPublicKey, format_fingerprint
from .log_records import (ADMIN_KINDS, ENTRY_FIELDS, ENTRY_PURPOSE, HASH_BYTES, KINDS,  # noqa: F401  (re-exported)
                          MAX_SIGNATURES, MEMBER_FIELDS, POLICY_BOUNDS, Signers, _bad, _fields,
                          _handle, _identity, _is_int, _key_record, _parse_member, _refuse, _role,
                          _with_key, default_policy, entry_hash, make_entry, make_genesis,
                          member_record, parse_policy, signed_content)
from .roster import Member, Policy, Roster


@dataclass(frozen=True)
class _Change:
    """What one verified entry changes; applied only after every check passed."""
    member: Member | None = None
    policy: Policy | None = None
    network: str | None = None
    relay_key: IdentityPublicKey | None = None


# -- the verifier -------------------------------------------------------------

class LogVerifier:
    """Verifies a network's log entry by entry and answers roster queries at any verified seq."""

    def __init__(self, pinned_genesis_hash: bytes):
        if not isinstance(pinned_genesis_hash, bytes) or len(pinned_genesis_hash) != HASH_BYTES:
            raise ValueError("a network fingerprint is a 32-byte SHA-256 hash")
        self._pinned = pinned_genesis_hash
        self._network = ""
        self._hashes: list[bytes] = []               # entry hash by seq
        self._times: list[int] = []                  # entry time by seq
        self._last_time = 0
        self._members: dict[str, Member] = {}        # current version of every member ever added
        self._history: dict[str, tuple[list[int], list[Member]]] = {}  # handle -> (seqs, versions)
        self._handles: list[str] = []                # handles in order of addition...
        self._added: list[int] = []                  # ...and the seq that added each
        self._keys: dict[IdentityPublicKey, str] = {}  # every identity key ever used -> handle
        self._admins: set[str] = set()               # active admins now
        self._policy_seqs: list[int] = []
        self._policies: list[Policy] = []
        # every relay key the log named, in order, with the seq and time of the entry naming it
        self._relay_seqs: list[int] = []
        self._relay_times: list[int] = []
        self._relay_keys: list[IdentityPublicKey] = []
        self._current: Roster | None = None          # cached roster at self.seq

    @property
    def seq(self) -> int:
        """Seq of the last verified entry; -1 before genesis."""
        return len(self._hashes) - 1

    @property
    def roster(self) -> Roster:
        if self._current is None:
            self._current = self.roster_at(self.seq)
        return self._current

    def hash_at(self, seq: int) -> bytes:
        self._check_seq(seq)
        return self._hashes[seq]

    def roster_at(self, seq: int) -> Roster:
        """The roster right after entry ``seq``: a bisect per member, no replay."""
        self._check_seq(seq)
        if seq == self.seq and self._current is not None:
            return self._current
        members = {}
        for handle in self._handles[:bisect_right(self._added, seq)]:
            seqs, versions = self._history[handle]
            members[handle] = versions[bisect_right(seqs, seq) - 1]
        policy = self._policies[bisect_right(self._policy_seqs, seq) - 1]
        relay_key = self._relay_keys[bisect_right(self._relay_seqs, seq) - 1]
        return Roster(network=self._network, genesis_hash=self._hashes[0], seq=seq,
                      head_hash=self._hashes[seq], policy=policy, members=members,
                      relay_key=relay_key, time=self._times[seq])

    def check_relay_key(self, key: IdentityPublicKey, time: int) -> int:
        """Whether ``key`` may sign a relay statement (receipt, status) dated ``time``.

        It may if this log names it as the network's relay key (in genesis or a
        set-relay-key entry) and no entry dated before ``time`` replaced it. There is
        no lower bound: a relay may start signing with a new key before an admin
        records it. Returns the seq that named the key; raises ``LogError``
        (``unknown-relay-key``, ``retired-relay-key``). Rule: docs/protocol.md §4.
        """
        for index, named in enumerate(self._relay_keys):
            if named != key:
                continue
            if index + 1 < len(self._relay_keys) and time > self._relay_times[index + 1]:
                raise _refuse("retired-relay-key", f"relay key {format_fingerprint(key.fingerprint())} "
                              f"was replaced at log entry {self._relay_seqs[index + 1]}, before this "
                              "statement's time: the old key can no longer vouch for anything")
            return self._relay_seqs[index]
        raise _refuse("unknown-relay-key", f"relay key {format_fingerprint(key.fingerprint())} is "
                      "not named by this network's membership log")

    def _check_seq(self, seq: int) -> None:
        if not _is_int(seq) or not 0 <= seq <= self.seq:
            raise _refuse("unknown-seq", f"the log has no verified entry {seq} yet: "
                          "fetch the membership log and try again")

    def extend(self, entries: Iterable[dict]) -> None:
        """Append entries in order; stops at the first refusal (the ones before it stay)."""
        for entry in entries:
            self.append(entry)

    def append(self, entry: dict) -> None:
        """Verify ``entry`` as the next one and apply it; a refused entry changes nothing."""
        seq, digest, signers = self._check_frame(entry)
        rule = self._RULES[entry["kind"]]
        change = rule(self, seq, entry["time"], entry["body"], signers)
        self._commit(seq, digest, entry["time"], change)

    def check_rotation_request(self, entry: dict) -> IdentityPublicKey:
        """Check a ``rotate-identity-key`` entry still waiting for an admin's signature, as the
        next entry, and return its new identity key. Every rule of ``append`` holds except
        that the admin's signature may be missing; nothing changes."""
        if not isinstance(entry, dict) or entry.get("kind") != "rotate-identity-key":
            raise _bad("a rotation request is a rotate-identity-key entry")
        seq, _, signers = self._check_frame(entry)
        change = self._rotate_identity_key(seq, entry["time"], entry["body"], signers,
                                           admin_to_come=True)
        return change.member.identity_key

    def _check_frame(self, entry: Any) -> tuple[int, bytes, Signers]:
        """Shape, chain, time and signatures: every rule that does not depend on the kind."""
        _fields(entry, ENTRY_FIELDS, "log entry")
        try:
            digest = entry_hash(entry)
        except KeysError as exc:
            raise _bad(f"log entry is not canonical JSON: {exc.message}") from None
        seq, kind, prev, time = entry["seq"], entry["kind"], entry["prev"], entry["time"]
        if not _is_int(seq) or seq < 0:
            raise _bad("seq must be a non-negative integer")
        expected = len(self._hashes)
        if seq > expected:
            raise _refuse("gap", f"entry {seq} arrived before entry {expected}: "
                          "fetch the missing entries first")
        if seq < expected:
            if digest == self._hashes[seq]:
                raise _refuse("duplicate-entry", f"entry {seq} is already verified: ask only for "
                          f"entries after {expected - 1}")
            raise _refuse("fork", f"entry {seq} differs from the one already verified: "
                          "the log has been forked; report this to a network admin")
        if kind not in KINDS or (kind == "genesis") != (seq == 0):
            raise _bad(f"kind {kind!r} is not allowed at seq {seq}")
        if seq == 0:
            if digest != self._pinned:
                raise _refuse("fork", "this genesis does not match the network fingerprint "
                              "you pinned: check the fingerprint with your network admin")
            if prev is not None:
                raise _bad("genesis must have prev null")
        elif not isinstance(prev, str):
            raise _bad("prev must be the base64url hash of the previous entry")
        elif prev != b64e(self._hashes[-1]):
            raise _refuse("fork", f"entry {seq} does not chain to entry {seq - 1}: "
                          "the log has been forked; report this to a network admin")
        if not _is_int(time) or time < 0:
            raise _bad("time must be a non-negative integer (unix seconds)")
        if time < self._last_time:
            raise _refuse("bad-time", f"entry {seq} is dated before entry {seq - 1}: "
                          "a log's times never go backwards")
        if not isinstance(entry["body"], dict):
            raise _bad("body must be a JSON object")
        return seq, digest, self._check_signatures(entry)

    def _check_signatures(self, entry: dict) -> Signers:
        """Verify every signature; return the signers in entry order (sorted, so reasons
        are deterministic when several signers are wrong)."""
        signatures = entry["signatures"]
        if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_SIGNATURES:
            raise _bad(f"an entry carries 1 to {MAX_SIGNATURES} signatures")
        for item in signatures:
            _fields(item, {"key", "sig"}, "signature")
            if not isinstance(item["sig"], str):
                raise _bad("a signature must be base64url text")
        keys = [item["key"] for item in signatures]
        if any(not isinstance(k, str) for k in keys) or keys != sorted(set(keys)):
            raise _bad("signatures must be sorted by key, one per key")
        content, signers = signed_content(entry), []
        for item in signatures:
            key = _identity(item["key"])
            try:
                key.verify(ENTRY_PURPOSE, content, item["sig"])
            except KeysError:
                raise _refuse("bad-signature", f"a signature on entry {entry['seq']} does not "
                              "verify: the entry was altered or signed by another key") from None
            signers.append(key)
        return tuple(signers)

    # -- who may sign ----------------------------------------------------------

    def _signer(self, key: IdentityPublicKey) -> Member:
        """The active member whose current identity key is ``key``."""
        handle = self._keys.get(key)
        if handle is None:
            raise _refuse("wrong-signer", "entry is signed by a key that belongs to no member "
                          f"({format_fingerprint(key.fingerprint())})")
        member = self._members[handle]
        if not member.active:
            raise _refuse("removed-member", f"{handle} was removed at entry "
                          f"{member.removed_seq}: its keys can sign nothing")
        if member.identity_key != key:
            raise _refuse("wrong-signer", f"entry is signed by an identity key {handle} has "
                          "replaced: a replaced key can sign nothing")
        return member

    def _require_admins(self, signers: Signers, kind: str) -> None:
        for key in signers:
            member = self._signer(key)
            if not member.is_admin:
                raise _refuse("wrong-signer", f"only an admin may sign {kind}; "
                              f"{member.handle} is a {member.role}")

    def _target(self, handle: Any) -> Member:
        member = self._members.get(_handle(handle))
        if member is None:
            raise _refuse("unknown-member", f"there is no member {handle!r} in this network: "
                          "check the handle")
        if not member.active:
            raise _refuse("removed-member", f"{handle} was removed at entry {member.removed_seq}: "
                          "a removed member can no longer change or be changed")
        return member

    def _keep_an_admin(self, member: Member) -> None:
        if member.is_admin and self._admins == {member.handle}:
            raise _refuse("last-admin", f"{member.handle} is the last admin: make another "
                          "member admin first, or the network could never change again")

    # -- one method per kind: check the body and signers, return the change ------

    def _genesis(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        _fields(body, {"network", "policy", "admin", "relay_key"}, "genesis body")
        network = _handle(body["network"], "network name")
        policy = parse_policy(body["policy"])
        admin = _parse_member(body["admin"], seq, time)
        relay_key = _identity(body["relay_key"])
        if admin.role != "admin":
            raise _bad("the genesis member must have role admin")
        if signers != (admin.identity_key,):
            raise _refuse("wrong-signer", "genesis must be signed by its admin's key alone")
        return _Change(member=admin, policy=policy, network=network, relay_key=relay_key)

    def _add_member(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        self._require_admins(signers, "add-member")
        _fields(body, {"member"}, "add-member body")
        member = _parse_member(body["member"], seq, time)
        old = self._members.get(member.handle)
        if old is not None:
            raise _refuse("duplicate-handle", f"handle {member.handle} is already taken"
                          + (" (by a removed member)" if not old.active else "")
                          + ": handles are never reused, so choose another")
        if member.identity_key in self._keys:
            raise _refuse("duplicate-key", "this identity key is, or was, another member's: "
                          "the new member must generate its own keys")
        return _Change(member=member)

    def _remove_member(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        self._require_admins(signers, "remove-member")
        _fields(body, {"handle"}, "remove-member body")
        member = self._target(body["handle"])
        self._keep_an_admin(member)
        return _Change(member=replace(member, removed_seq=seq))

    def _set_role(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        self._require_admins(signers, "set-role")
        _fields(body, {"handle", "role"}, "set-role body")
        member = self._target(body["handle"])
        role = _role(body["role"])
        if role != "admin":
            self._keep_an_admin(member)
        return _Change(member=replace(member, role=role))

    def _set_policy(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        self._require_admins(signers, "set-policy")
        _fields(body, {"policy"}, "set-policy body")
        return _Change(policy=parse_policy(body["policy"]))

    def _set_relay_key(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        self._require_admins(signers, "set-relay-key")
        _fields(body, {"relay_key"}, "set-relay-key body")
        relay_key = _identity(body["relay_key"])
        # Never back to a retired key: it may have leaked, and naming it again would let it
        # vouch for new receipts.
        if relay_key in self._relay_keys:
            raise _refuse("duplicate-key", "this relay key is, or was, the network's relay key: "
                          "a new relay key must be one the log never named")
        return _Change(relay_key=relay_key)

    def _rotate_encryption_key(self, seq: int, time: int, body: dict, signers: Signers) -> _Change:
        _fields(body, {"handle", "encryption_key"}, "rotate-encryption-key body")
        member = self._target(body["handle"])
        others = [key for key in signers if key != member.identity_key]
        if others:
            other = self._signer(others[0])  # a removed or unknown signer gets its own reason
            raise _refuse("wrong-signer", f"{other.handle} cannot rotate {member.handle}'s "
                          "encryption key: a member rotates only its own")
        version, key, not_after = _key_record(body["encryption_key"], member.identity_key, time)
        return _Change(member=_with_key(member, version, key, not_after))

    def _rotate_identity_key(self, seq: int, time: int, body: dict, signers: Signers, *,
                             admin_to_come: bool = False) -> _Change:
        _fields(body, {"handle", "identity_key", "encryption_key"}, "rotate-identity-key body")
        member = self._target(body["handle"])
        new = _identity(body["identity_key"])
        if new in self._keys:
            raise _refuse("duplicate-key", "the new identity key is, or was, a member's key: "
                          "generate a fresh one")
        # An admin rotating its own key needs no second admin: it already holds that power.
        # A request (check_rotation_request) is checked before an admin countersigns it.
        admin_signed = member.is_admin or admin_to_come
        for key in [k for k in signers if k not in (member.identity_key, new)]:
            other = self._signer(key)
            if not other.is_admin:
                raise _refuse("wrong-signer", f"{other.handle} cannot sign {member.handle}'s "
                              "identity rotation: only the member and an admin can")
            admin_signed = True
        if member.identity_key not in signers or new not in signers or not admin_signed:
            raise _refuse("wrong-signer", f"rotating {member.handle}'s identity key needs "
                          "signatures by its current key, its new key and an admin")
        version, key, not_after = _key_record(body["encryption_key"], new, time)
        return _Change(member=_with_key(replace(member, identity_key=new), version, key, not_after))

    _RULES = {"genesis": _genesis, "add-member": _add_member, "remove-member": _remove_member,
              "set-role": _set_role, "set-policy": _set_policy, "set-relay-key": _set_relay_key,
              "rotate-encryption-key": _rotate_encryption_key,
              "rotate-identity-key": _rotate_identity_key}

    def _commit(self, seq: int, digest: bytes, time: int, change: _Change) -> None:
        member = change.member
        if member is not None:
            if member.handle not in self._history:
                self._history[member.handle] = ([], [])
                self._handles.append(member.handle)
                self._added.append(seq)
            seqs, versions = self._history[member.handle]
            seqs.append(seq)
            versions.append(member)
            self._members[member.handle] = member
            self._keys.setdefault(member.identity_key, member.handle)
            (self._admins.add if member.is_admin else self._admins.discard)(member.handle)
        if change.policy is not None:
            self._policy_seqs.append(seq)
            self._policies.append(change.policy)
        if change.network is not None:
            self._network = change.network
        if change.relay_key is not None:
            self._relay_seqs.append(seq)
            self._relay_times.append(time)
            self._relay_keys.append(change.relay_key)
        self._hashes.append(digest)
        self._times.append(time)
        self._last_time = time
        self._current = None
