"""The roster: who is a member of a network at one point of its membership log.

A ``Roster`` is derived by replaying the log (see ``keys.log``); it is an
immutable snapshot, so code holding the roster at ``seq`` n cannot see later
changes by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .hpke import EncryptionPublicKey
from .identity import IdentityPublicKey


@dataclass(frozen=True)
class Member:
    handle: str
    name: str
    country: str
    organisation: str
    role: str                                  # "admin" or "member"
    identity_key: IdentityPublicKey
    encryption_key: EncryptionPublicKey
    encryption_key_version: int
    encryption_key_not_after: int
    added_seq: int                             # seq of the add-member (or genesis) entry
    removed_seq: int | None = None             # seq of the remove-member entry, if removed
    #: every encryption key this member has published: version -> public key
    encryption_keys: Mapping[int, EncryptionPublicKey] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.removed_seq is None

    @property
    def is_admin(self) -> bool:
        return self.active and self.role == "admin"


@dataclass(frozen=True)
class Policy:
    retention: int                # seconds an uncollected envelope is kept
    key_max_age: int              # seconds before an encryption key must rotate
    key_grace: int                # seconds an old private key is kept after rotation
    max_recipients: int
    max_message_bytes: int
    max_attachment_bytes: int
    max_attachments: int


@dataclass(frozen=True)
class Roster:
    network: str                  # network name from the genesis entry
    genesis_hash: bytes           # the network's fingerprint
    seq: int                      # last entry applied
    head_hash: bytes              # hash of that entry
    policy: Policy
    members: Mapping[str, Member]  # every member ever added, removed ones included
    #: the relay key the log names at ``seq`` (genesis or the latest set-relay-key entry);
    #: None only in a roster built by hand rather than replayed from a log (tests)
    relay_key: IdentityPublicKey | None = None
    time: int = 0                 # the `time` of entry `seq` (its signers' clock)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))

    def active(self) -> dict[str, Member]:
        return {h: m for h, m in self.members.items() if m.active}

    def admins(self) -> dict[str, Member]:
        return {h: m for h, m in self.members.items() if m.is_admin}

    def member(self, handle: str) -> Member | None:
        return self.members.get(handle)

    def by_identity(self, key: IdentityPublicKey) -> Member | None:
        """The member whose *current* identity key is ``key``."""
        for m in self.members.values():
            if m.identity_key == key:
                return m
        return None

    def head(self) -> dict:
        """The ``roster_head`` a signer names: ``{"seq", "hash"}``."""
        from .encoding import b64e
        return {"seq": self.seq, "hash": b64e(self.head_hash)}
