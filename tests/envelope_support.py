"""Fixed keys and hand-built rosters for the envelope tests and their vector generator.

Rosters are built directly (not replayed from a membership log): the
envelope only needs a ``Roster`` snapshot, and a spec in plain JSON lets the
vector file carry the exact rosters its cases were sealed against.
"""

from __future__ import annotations

import hashlib
from typing import Any

from keys.constants import (DEFAULT_KEY_GRACE, DEFAULT_KEY_MAX_AGE, DEFAULT_MAX_ATTACHMENT_BYTES,
                            DEFAULT_MAX_ATTACHMENTS, DEFAULT_MAX_MESSAGE_BYTES,
                            DEFAULT_MAX_RECIPIENTS, DEFAULT_RETENTION)
from keys.encoding import b64d, b64e
from keys.hpke import PRIVATE_KEY_BYTES, EncryptionKey
from keys.identity import IdentityKey
from keys.roster import Member, Policy, Roster

#: far enough in the future that no test trips over key expiry by accident
NOT_AFTER = 4_000_000_000

DEFAULT_POLICY = Policy(
    retention=DEFAULT_RETENTION, key_max_age=DEFAULT_KEY_MAX_AGE, key_grace=DEFAULT_KEY_GRACE,
    max_recipients=DEFAULT_MAX_RECIPIENTS, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
    max_attachment_bytes=DEFAULT_MAX_ATTACHMENT_BYTES, max_attachments=DEFAULT_MAX_ATTACHMENTS,
)


def seed(label: str, size: int = 32) -> bytes:
    """Deterministic test seed: SHA-256 in counter mode over a label."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"comity test seed {label} {counter}".encode()).digest()
        counter += 1
    return out[:size]


def identity(handle: str) -> IdentityKey:
    return IdentityKey.from_seed(seed(f"{handle} identity"))


def encryption_key(handle: str, version: int) -> EncryptionKey:
    return EncryptionKey(seed(f"{handle} encryption {version}", PRIVATE_KEY_BYTES))


def key_spec(handles: list[str], versions: dict[str, int]) -> dict[str, Any]:
    """The private keys of ``handles`` as vector JSON (seeds, so others can rebuild them)."""
    return {
        handle: {
            "identity_seed": b64e(identity(handle).seed()),
            "encryption_seeds": {str(v): b64e(encryption_key(handle, v).private_bytes())
                                 for v in range(1, versions.get(handle, 1) + 1)},
        }
        for handle in handles
    }


def member(handle: str, *, role: str = "member", key_version: int = 1, added_seq: int = 0,
           removed_seq: int | None = None, identity_of: str | None = None,
           not_after: int = NOT_AFTER) -> Member:
    keys = {v: encryption_key(handle, v).public for v in range(1, key_version + 1)}
    return Member(
        handle=handle, name=handle.title(), country="FR", organisation="Test Ministry",
        role=role, identity_key=identity(identity_of or handle).public,
        encryption_key=keys[key_version], encryption_key_version=key_version,
        encryption_key_not_after=not_after, added_seq=added_seq, removed_seq=removed_seq,
        encryption_keys=keys,
    )


def roster(members: list[Member], *, seq: int = 3, head_hash: bytes | None = None,
           genesis_hash: bytes | None = None, policy: Policy = DEFAULT_POLICY) -> Roster:
    return Roster(
        network="test-network",
        genesis_hash=genesis_hash or hashlib.sha256(b"test genesis").digest(),
        seq=seq,
        head_hash=head_hash or hashlib.sha256(f"test head {seq}".encode()).digest(),
        policy=policy,
        members={m.handle: m for m in members},
    )


def roster_spec(r: Roster) -> dict[str, Any]:
    """A roster as vector JSON (keys by reference to the ``keys`` section)."""
    return {
        "seq": r.seq, "head_hash": b64e(r.head_hash),
        "members": {
            h: {"role": m.role, "added_seq": m.added_seq, "removed_seq": m.removed_seq,
                "encryption_key_version": m.encryption_key_version}
            for h, m in sorted(r.members.items())
        },
    }


def roster_from_spec(spec: dict[str, Any], keys: dict[str, Any], genesis_hash: str) -> Roster:
    members = []
    for handle, m in spec["members"].items():
        k = keys[handle]
        enc = {int(v): EncryptionKey(b64d(s)).public for v, s in k["encryption_seeds"].items()}
        version = m["encryption_key_version"]
        members.append(Member(
            handle=handle, name=handle.title(), country="FR", organisation="Test Ministry",
            role=m["role"], identity_key=IdentityKey.from_seed(b64d(k["identity_seed"])).public,
            encryption_key=enc[version], encryption_key_version=version,
            encryption_key_not_after=NOT_AFTER, added_seq=m["added_seq"],
            removed_seq=m["removed_seq"],
            encryption_keys={v: p for v, p in enc.items() if v <= version},
        ))
    return roster(members, seq=spec["seq"], head_hash=b64d(spec["head_hash"]),
                  genesis_hash=b64d(genesis_hash))


def decryption_keys(keys: dict[str, Any], handle: str, versions: list[int]
                    ) -> dict[int, EncryptionKey]:
    seeds = keys[handle]["encryption_seeds"]
    return {v: EncryptionKey(b64d(seeds[str(v)])) for v in versions}
