"""Write tests/vectors/log/valid.json and tests/vectors/log/refusals.json.

Every key comes from a fixed seed and Ed25519 signatures are deterministic, so
rerunning this script rewrites both files byte for byte. ``Scenario`` (a small
builder of logs that does no checking of its own) is also used by
tests/test_log.py.

valid.json: one log using every kind, the hash of every entry, and the
expected roster at several seqs. refusals.json: cases whose entries all verify
except the last one, which a verifier must refuse with reason ``expect``.

    python tests/vectors/log/generate.py
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from keys.constants import DAY, MINUTE  # noqa: E402
from keys.encoding import b64d, b64e  # noqa: E402
from keys.hpke import EncryptionKey, PRIVATE_KEY_BYTES, make_key_record  # noqa: E402
from keys.identity import IdentityKey  # noqa: E402
from keys.log import (LogVerifier, default_policy, entry_hash, make_entry,  # noqa: E402
                      make_genesis, member_record)
from keys.roster import Roster  # noqa: E402

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

COUNTRIES = {"alice": "ES", "bob": "FR", "carol": "PT", "dave": "", "erin": "DE", "frank": "SN"}
NAMES = {"alice": "Álvaro Núñez", "bob": "Béatrice Dubois", "carol": "Carolina Sousa",
         "dave": "Dave Ortiz", "erin": "Erin Schäfer", "frank": "Fatou Ndiaye"}


def seed(label: str) -> bytes:
    return hashlib.sha256(b"comity test seed " + label.encode()).digest()


def identity(label: str) -> IdentityKey:
    return IdentityKey.from_seed(seed("log identity " + label))


def relay(label: str) -> IdentityKey:
    """A relay's signing key (only its public half goes into the log)."""
    return IdentityKey.from_seed(seed("log relay " + label))


def encryption(label: str) -> EncryptionKey:
    # SHAKE-256 stretches the 32-byte test seed to the 96 bytes of an HPKE private key
    stretched = hashlib.shake_256(seed("log encryption " + label)).digest(PRIVATE_KEY_BYTES)
    return EncryptionKey(stretched)


class Scenario:
    """Builds a log entry by entry. Members are named by handle; ``keys[handle]`` is the
    member's current identity key. Nothing is verified here: that is the verifier's job."""

    def __init__(self, network: str = "ejn-demo", admin: str = "alice"):
        self.keys: dict[str, IdentityKey] = {}
        self.generations: dict[str, int] = {}     # identity keys each handle has had
        self.versions: dict[str, int] = {}
        self.time = T0
        self.relay_key = relay("relay#0")          # the relay's current signing key
        self.entries = [make_genesis(self.new_identity(admin), network,
                                     self.record(admin, "admin"), default_policy(), self.time,
                                     relay_key=self.relay_key.public)]

    @property
    def genesis_hash(self) -> bytes:
        return entry_hash(self.entries[0])

    def new_identity(self, handle: str) -> IdentityKey:
        self.generations[handle] = self.generations.get(handle, -1) + 1
        self.keys[handle] = identity(f"{handle}#{self.generations[handle]}")
        self.versions[handle] = 0
        return self.keys[handle]

    def key_record(self, handle: str, *, signer: IdentityKey | None = None,
                   version: int | None = None, not_after: int | None = None) -> dict:
        self.versions[handle] = version or self.versions[handle] + 1
        public = encryption(f"{handle}#{self.keys[handle].public.b64()}#{self.versions[handle]}")
        return make_key_record(signer or self.keys[handle], public.public,
                               version=self.versions[handle], created=self.time,
                               not_after=not_after or self.time + 90 * DAY)

    def record(self, handle: str, role: str = "member") -> dict:
        key = self.keys.get(handle) or self.new_identity(handle)
        return member_record(key.public, self.key_record(handle), handle=handle,
                             name=NAMES.get(handle, handle.title()),
                             country=COUNTRIES.get(handle, ""),
                             organisation=f"Fiscalía {handle}", role=role)

    def signer(self, who: str | IdentityKey) -> IdentityKey:
        return who if isinstance(who, IdentityKey) else self.keys[who]

    def entry(self, kind: str, body: dict, *signers: str | IdentityKey,
              seq: int | None = None, time: int | None = None) -> dict:
        """Sign and append an entry (time moves one minute unless given)."""
        self.time = self.time + MINUTE if time is None else time
        entry = make_entry(self.entries[-1], len(self.entries) if seq is None else seq, kind,
                           body, self.time, [self.signer(s) for s in signers])
        self.entries.append(entry)
        return entry

    def add(self, handle: str, role: str = "member", by: str = "alice") -> dict:
        self.new_identity(handle)
        return self.entry("add-member", {"member": self.record(handle, role)}, by)

    def remove(self, handle: str, by: str = "alice") -> dict:
        return self.entry("remove-member", {"handle": handle}, by)

    def set_role(self, handle: str, role: str, by: str = "alice") -> dict:
        return self.entry("set-role", {"handle": handle, "role": role}, by)

    def set_policy(self, by: str = "alice", **changes: int) -> dict:
        return self.entry("set-policy", {"policy": {**default_policy(), **changes}}, by)

    def set_relay_key(self, label: str, by: str = "alice") -> dict:
        """Name a new relay key (the relay's operator rotated it)."""
        self.relay_key = relay(label)
        return self.entry("set-relay-key", {"relay_key": self.relay_key.public.b64()}, by)

    def rotate_encryption(self, handle: str, by: str | None = None, **record: object) -> dict:
        body = {"handle": handle, "encryption_key": self.key_record(handle, **record)}
        return self.entry("rotate-encryption-key", body, by or handle)

    def rotate_identity(self, handle: str, *cosigners: str | IdentityKey, new_signs: bool = True,
                        record_by_old: bool = False) -> dict:
        old = self.keys[handle]
        version = self.versions[handle]
        new = self.new_identity(handle)
        record = self.key_record(handle, version=version + 1, signer=old if record_by_old else None)
        body = {"handle": handle, "identity_key": new.public.b64(), "encryption_key": record}
        signers = [old, *([new] if new_signs else []), *cosigners]
        return self.entry("rotate-identity-key", body, *signers)


def roster_json(roster: Roster) -> dict:
    """A roster as plain JSON, the form the vectors pin."""
    return {
        "network": roster.network, "genesis_hash": b64e(roster.genesis_hash),
        "seq": roster.seq, "head_hash": b64e(roster.head_hash),
        "policy": dict(vars(roster.policy)), "relay_key": roster.relay_key.b64(),
        "members": {h: {
            "name": m.name, "country": m.country, "organisation": m.organisation,
            "role": m.role, "identity_key": m.identity_key.b64(),
            "encryption_key_version": m.encryption_key_version,
            "encryption_key_not_after": m.encryption_key_not_after,
            "encryption_keys": {str(v): k.b64() for v, k in sorted(m.encryption_keys.items())},
            "added_seq": m.added_seq, "removed_seq": m.removed_seq,
        } for h, m in sorted(roster.members.items())},
    }


def valid_log() -> Scenario:
    s = Scenario()
    s.add("bob")                                  # 1
    s.add("carol", "admin")                       # 2
    s.add("dave")                                 # 3
    s.rotate_encryption("bob")                    # 4
    s.set_role("dave", "admin", by="carol")       # 5
    s.rotate_identity("bob", "carol")             # 6 non-admin: old key, new key and an admin
    s.rotate_identity("alice")                    # 7 admin: old and new key suffice
    s.set_policy(by="carol", retention=14 * DAY, max_recipients=50)  # 8
    s.remove("dave")                              # 9 signed by alice's new key
    s.set_role("carol", "member")                 # 10
    s.add("erin", by="alice")                     # 11
    s.entry("rotate-encryption-key",              # 12 same time as 11: times may repeat
            {"handle": "erin", "encryption_key": s.key_record("erin")}, "erin", time=s.time)
    s.set_relay_key("relay#1")                    # 13 the relay operator rotated the relay key
    return s


def base() -> Scenario:
    s = Scenario()
    s.add("bob")
    return s


def tamper(entry: dict, path: tuple, value: object) -> None:
    """Change one field of a signed entry after signing."""
    target = entry
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value


def flip_signature(entry: dict) -> None:
    sig = bytearray(b64d(entry["signatures"][0]["sig"]))
    sig[0] ^= 1
    entry["signatures"][0]["sig"] = b64e(bytes(sig))


def refusal_cases() -> list[tuple[str, str, Scenario, bytes | None]]:
    """(expect, description, scenario, pinned fingerprint if not the scenario's own)."""
    cases = []

    def case(expect: str, description: str, s: Scenario, pinned: bytes | None = None) -> None:
        cases.append((expect, description, s, pinned))

    s = base(); flip_signature(s.add("dave"))
    case("bad-signature", "add-member whose signature was altered", s)
    s = base(); tamper(s.add("dave"), ("body", "member", "name"), "Mallory")
    case("bad-signature", "add-member whose member name was changed after signing", s)
    s = base(); s.add("dave", by="bob")
    case("wrong-signer", "a member (not an admin) signs add-member", s)
    s = base(); s.rotate_encryption("alice", by="bob")
    case("wrong-signer", "a member rotates another member's encryption key", s)
    s = base(); s.rotate_identity("bob")
    case("wrong-signer", "a member rotates its identity key without an admin's signature", s)
    s = base(); s.rotate_identity("bob", "alice", new_signs=False)
    case("wrong-signer", "identity rotation lacks the new key's signature (proof of possession)", s)
    s = base(); s.set_policy(by=identity("outsider"))
    case("wrong-signer", "a key belonging to no member signs set-policy", s)
    s = base(); old = s.keys["alice"]; s.rotate_identity("alice"); s.add("dave", by=old)
    case("wrong-signer", "an admin's replaced identity key signs add-member", s)
    s = base(); s.add("bob")
    case("duplicate-handle", "add-member reuses an active member's handle", s)
    s = base(); s.remove("bob"); s.add("bob")
    case("duplicate-handle", "add-member reuses a removed member's handle", s)
    s = base(); s.keys["dave"] = s.keys["bob"]; s.versions["dave"] = 0
    s.entry("add-member", {"member": s.record("dave")}, "alice")
    case("duplicate-key", "add-member with another member's identity key", s)
    s = base(); s.entry("remove-member", {"handle": "bob"}, "alice", seq=3)
    case("gap", "entry 3 follows entry 1", s)
    s = base(); s.entries.append(make_entry(s.entries[0], 2, "remove-member", {"handle": "bob"},
                                            s.time, [s.keys["alice"]]))
    case("fork", "entry 2 names entry 0 as prev instead of entry 1", s)
    s = base(); s.entries.append(make_entry(s.entries[0], 1, "remove-member", {"handle": "bob"},
                                            s.time, [s.keys["alice"]]))
    case("fork", "a second, different entry 1 arrives after entry 1", s)
    s = base(); s.entries.append(copy.deepcopy(s.entries[1]))
    case("duplicate-entry", "entry 1 arrives twice", s)
    s = Scenario()
    case("fork", "genesis does not match the pinned network fingerprint", s,
         entry_hash(Scenario(network="another-network").entries[0]))
    s = base(); s.remove("bob"); s.rotate_encryption("bob")
    case("removed-member", "a removed member signs a rotation of its own key", s)
    s = base(); s.add("carol", "admin"); s.remove("carol"); s.add("dave", by="carol")
    case("removed-member", "a removed admin signs add-member", s)
    s = base(); s.remove("bob"); s.remove("bob")
    case("removed-member", "remove-member of a member already removed", s)
    s = base(); s.remove("alice")
    case("last-admin", "the only admin is removed", s)
    s = base(); s.set_role("alice", "member")
    case("last-admin", "the only admin is demoted", s)
    s = base(); tamper(s.remove("bob"), ("note",), "x")
    case("bad-entry", "entry with an unknown field", s)
    s = base(); s.new_identity("dave")
    record = {**s.record("dave"), "encryption_key": s.key_record("dave", signer=s.keys["bob"])}
    s.entry("add-member", {"member": record}, "alice")
    case("bad-entry", "member's encryption key record is signed by another identity key", s)
    s = base(); s.rotate_identity("bob", "alice", record_by_old=True)
    case("bad-entry", "identity rotation's key record is signed by the old key, not the new", s)
    s = base(); s.rotate_encryption("bob", version=1)
    case("bad-entry", "rotate-encryption-key does not raise the key version", s)
    s = base(); s.rotate_encryption("bob", not_after=s.time + MINUTE)
    case("bad-entry", "encryption key record expired before the entry's time", s)
    s = base(); s.set_policy(max_recipients=501)
    case("bad-entry", "policy max_recipients above the ceiling", s)
    s = base(); s.entry("set-policy", {"policy": {**default_policy(), "colour": 1}}, "alice")
    case("bad-entry", "policy with an unknown field", s)
    s = base(); s.entry("remove-member", {"handle": "Bob"}, "alice")
    case("bad-entry", "handle with upper-case letters", s)
    s = base(); s.set_role("bob", "admin", by="alice")
    s.entries[-1]["signatures"] *= 2
    case("bad-entry", "the same signature twice", s)
    s = base(); s.remove("zed")
    case("unknown-member", "remove-member of a handle never added", s)
    s = base(); s.set_role("zed", "admin")
    case("unknown-member", "set-role of a handle never added", s)
    s = base(); s.remove("bob"); s.set_role("bob", "admin")
    case("removed-member", "set-role of a removed member", s)
    s = base(); s.entry("remove-member", {"handle": "bob"}, "alice", time=T0 - 1)
    case("bad-time", "entry dated before the previous entry", s)
    s = base(); s.set_relay_key("relay#1", by="bob")
    case("wrong-signer", "a member (not an admin) signs set-relay-key", s)
    s = base(); s.entry("set-relay-key", {"relay_key": s.relay_key.public.b64()}, "alice")
    case("duplicate-key", "set-relay-key names the relay key already in force", s)
    s = base(); first = s.relay_key; s.set_relay_key("relay#1")
    s.entry("set-relay-key", {"relay_key": first.public.b64()}, "alice")
    case("duplicate-key", "set-relay-key goes back to a retired relay key", s)
    s = base(); s.entry("set-relay-key", {"relay_key": "not-a-key"}, "alice")
    case("bad-entry", "set-relay-key whose key is not an Ed25519 public key", s)
    s = base(); s.entry("set-relay-key", {"relay_key": relay("relay#1").public.b64(), "note": "x"},
                        "alice")
    case("bad-entry", "set-relay-key with an unknown body field", s)
    s = Scenario(); body = {k: v for k, v in s.entries[0]["body"].items() if k != "relay_key"}
    s.entries[0] = make_entry(None, 0, "genesis", body, T0, [s.keys["alice"]])
    case("bad-entry", "genesis that names no relay key", s)
    return cases


def write(name: str, doc: dict) -> None:
    (HERE / name).write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                             encoding="utf-8")


def main() -> None:
    s = valid_log()
    verifier = LogVerifier(s.genesis_hash)
    verifier.extend(s.entries)
    write("valid.json", {
        "origin": "generated by tests/vectors/log/generate.py (keys.log, fixed seeds)",
        "description": "a log using every kind; every entry verifies; rosters pinned at some seqs",
        "genesis_hash": b64e(s.genesis_hash),
        "entries": s.entries,
        "hashes": [b64e(entry_hash(e)) for e in s.entries],
        "rosters": [roster_json(verifier.roster_at(n)) for n in (0, 3, 6, 7, 9, 12)],
        "expect": "success",
    })
    cases = []
    for expect, description, s, pinned in refusal_cases():
        cases.append({"description": description, "expect": expect,
                      "genesis_hash": b64e(pinned or s.genesis_hash), "entries": s.entries})
    write("refusals.json", {
        "origin": "generated by tests/vectors/log/generate.py (keys.log, fixed seeds)",
        "note": "every entry but the last verifies; the last is refused with reason `expect` "
                "and leaves the verifier's state unchanged",
        "cases": cases,
    })


if __name__ == "__main__":
    main()
