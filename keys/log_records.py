"""Membership log records: the entry format, builders, and the checks of each record.

The rules that relate one entry to the log before it (who may sign what,
chaining, handles and keys never reused) are in ``keys.log``; this module
knows single records: an entry's shape and hash, member records, key
records, policies. Wire format: docs/protocol.md §4.
"""


from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Iterable

from . import constants as C
from .encoding import MAX_SAFE_INTEGER, b64e, canonical, require_fields
from .errors import KeysError, LogError
from .hpke import EncryptionPublicKey, verify_key_record
from .identity import IdentityKey, IdentityPublicKey
from .roster import Member, Policy

#: signature purpose: domain separation, so a log signature never passes as a message or receipt
ENTRY_PURPOSE = "log-entry"
#: SHA-256 digest size: entry hashes, ``prev`` and the network fingerprint
HASH_BYTES = 32
#: rotate-identity-key needs three signers; a little room for co-signing admins, and a cap on
#: the Ed25519 work one hostile entry can demand
MAX_SIGNATURES = 8

ADMIN_KINDS = ("add-member", "remove-member", "set-role", "set-policy", "set-relay-key")
KINDS = ("genesis", *ADMIN_KINDS, "rotate-encryption-key", "rotate-identity-key")

Signers = tuple[IdentityPublicKey, ...]

ENTRY_FIELDS = {"seq", "prev", "kind", "time", "body", "signatures"}
MEMBER_FIELDS = {"handle", "name", "country", "organisation", "role", "identity_key",
                 "encryption_key"}

#: policy field -> (lowest, highest) accepted value. Every field is required: filling a gap from
#: today's defaults would let a later release change the meaning of an old log.
POLICY_BOUNDS = {
    "retention": (C.HOUR, MAX_SAFE_INTEGER),
    "key_max_age": (C.DAY, MAX_SAFE_INTEGER),
    "key_grace": (0, MAX_SAFE_INTEGER),          # 0: destroy an old private key at rotation
    "max_recipients": (1, C.MAX_RECIPIENTS),
    "max_message_bytes": (1024, C.MAX_MESSAGE_BYTES),
    "max_attachment_bytes": (0, MAX_SAFE_INTEGER),
    "max_attachments": (0, C.MAX_ATTACHMENTS),   # 0: the network allows no attachments
}

# C0/C1 controls and bidirectional overrides/isolates: they can make one name print as another.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _refuse(reason: str, message: str) -> LogError:
    return LogError(message, reason=reason)


def _bad(message: str) -> LogError:
    return _refuse("bad-entry", message)


# -- building entries ---------------------------------------------------------

def entry_hash(entry: dict) -> bytes:
    """SHA-256 of the canonical entry, signatures included."""
    return hashlib.sha256(canonical(entry)).digest()


def signed_content(entry: dict) -> dict:
    """What each signature of ``entry`` covers: every field but ``signatures``."""
    return {k: v for k, v in entry.items() if k != "signatures"}


def default_policy() -> dict:
    return {
        "retention": C.DEFAULT_RETENTION,
        "key_max_age": C.DEFAULT_KEY_MAX_AGE,
        "key_grace": C.DEFAULT_KEY_GRACE,
        "max_recipients": C.DEFAULT_MAX_RECIPIENTS,
        "max_message_bytes": C.DEFAULT_MAX_MESSAGE_BYTES,
        "max_attachment_bytes": C.DEFAULT_MAX_ATTACHMENT_BYTES,
        "max_attachments": C.DEFAULT_MAX_ATTACHMENTS,
    }


def member_record(identity_key: IdentityPublicKey, encryption_key: dict, *, handle: str,
                  name: str, country: str = "", organisation: str = "",
                  role: str = "member") -> dict:
    """The member record of genesis and add-member (``encryption_key``: a signed key record)."""
    return {"handle": handle, "name": name, "country": country, "organisation": organisation,
            "role": role, "identity_key": identity_key.b64(), "encryption_key": encryption_key}


def make_entry(prev: dict | bytes | None, seq: int, kind: str, body: dict, time: int,
               signers: Iterable[IdentityKey]) -> dict:
    """Build and sign an entry. ``prev``: the previous entry or its hash (None for genesis).

    Signatures are sorted by key, the only order a verifier accepts, so one set of
    signers gives exactly one entry hash.
    """
    if isinstance(prev, dict):
        prev = entry_hash(prev)
    unsigned = {"seq": seq, "prev": None if prev is None else b64e(prev), "kind": kind,
                "time": time, "body": body}
    signatures = [{"key": k.public.b64(), "sig": k.sign_b64(ENTRY_PURPOSE, unsigned)}
                  for k in signers]
    return {**unsigned, "signatures": sorted(signatures, key=lambda s: s["key"])}


def make_genesis(admin_identity: IdentityKey, network: str, admin_member_record: dict,
                 policy: dict, time: int, *, relay_key: IdentityPublicKey) -> dict:
    """The first entry; ``relay_key`` is the key of the relay that will hold the network."""
    body = {"network": network, "policy": policy, "admin": admin_member_record,
            "relay_key": relay_key.b64()}
    return make_entry(None, 0, "genesis", body, time, [admin_identity])


# -- checking records ---------------------------------------------------------

def _fields(record: Any, required: set[str], what: str) -> dict:
    return require_fields(record, required, what=what, error=_bad)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _handle(value: Any, what: str = "handle") -> str:
    # fullmatch, as constants.py asks: the whole string, no trailing newline
    if not isinstance(value, str) or not re.fullmatch(C.HANDLE_PATTERN, value):
        raise _bad(f"{what} {value!r} is not valid: use 3-64 characters a-z, 0-9, '.' and '-', "
                   "starting and ending with a letter or digit")
    return value


def _role(value: Any) -> str:
    if value not in C.ROLES:
        raise _bad(f"role must be one of {', '.join(C.ROLES)}, not {value!r}")
    return value


def _text(value: Any, what: str, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise _bad(f"{what} must be text of {low} to {high} characters")
    if _UNPRINTABLE.search(value):
        raise _bad(f"{what} contains control or text-direction characters")
    return value


def _identity(value: Any) -> IdentityPublicKey:
    try:
        return IdentityPublicKey.from_b64(value)
    except KeysError as exc:
        raise _bad(f"identity key refused: {exc.message}") from None


def _key_record(record: Any, identity: IdentityPublicKey, time: int
                ) -> tuple[int, EncryptionPublicKey, int]:
    if isinstance(record, dict) and not isinstance(record.get("sig", ""), str):
        raise _bad("encryption key record: sig must be base64url text")  # else a TypeError below
    try:
        key = verify_key_record(record, identity)
    except KeysError as exc:
        raise _bad(f"encryption key record refused ({exc.message}): it must be signed by "
                   "the identity key it is published for") from None
    if record["not_after"] <= time:
        raise _bad("encryption key record had expired before the entry's time: generate a new key")
    return record["version"], key, record["not_after"]


def parse_policy(value: Any) -> Policy:
    """Check a policy object (every field, within ``POLICY_BOUNDS``) and return a ``Policy``."""
    _fields(value, set(POLICY_BOUNDS), "policy")
    for name, (low, high) in POLICY_BOUNDS.items():
        if not _is_int(value[name]) or not low <= value[name] <= high:
            raise _bad(f"policy {name} must be an integer from {low} to {high}")
    return Policy(**value)


def _parse_member(record: Any, seq: int, time: int) -> Member:
    _fields(record, MEMBER_FIELDS, "member record")
    country = record["country"]
    if not isinstance(country, str) or (country and not re.fullmatch(C.COUNTRY_PATTERN, country)):
        raise _bad(f"country must be an ISO 3166 alpha-2 code such as 'ES', or '', not {country!r}")
    identity = _identity(record["identity_key"])
    version, key, not_after = _key_record(record["encryption_key"], identity, time)
    return Member(
        handle=_handle(record["handle"]),
        name=_text(record["name"], "name", 1, C.MAX_DISPLAY_NAME),
        country=country,
        organisation=_text(record["organisation"], "organisation", 0, C.MAX_ORGANISATION),
        role=_role(record["role"]), identity_key=identity,
        encryption_key=key, encryption_key_version=version, encryption_key_not_after=not_after,
        added_seq=seq, encryption_keys=MappingProxyType({version: key}))


def _with_key(member: Member, version: int, key: EncryptionPublicKey, not_after: int) -> Member:
    if version <= member.encryption_key_version:
        raise _bad(f"encryption key version {version} is not newer than {member.handle}'s "
                   f"current version {member.encryption_key_version}")
    if key in member.encryption_keys.values():
        raise _bad(f"{member.handle} published this encryption key before: generate a new one")
    keys = MappingProxyType({**member.encryption_keys, version: key})
    return replace(member, encryption_key=key, encryption_key_version=version,
                   encryption_key_not_after=not_after, encryption_keys=keys)
