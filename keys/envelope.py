"""Message envelopes: seal a signed message for its recipients, and open one.

Sealing (full wire format in docs/protocol.md §5):

1. payload = {v, id, network, sender, recipients, created, roster_head,
   headers, body, manifest}; signed payload = {"payload": payload, "sig":
   Ed25519 by the sender's identity key under purpose "message"}.
2. canonical(signed payload) is encrypted once with a random content key
   (XChaCha20-Poly1305); the associated data is canonical(header view), the
   six fields the relay sees: v, id, network, sender, recipients, created.
3. The content key is wrapped for each recipient with HPKE to its current
   encryption key; HPKE info names the message id, recipient, network and
   key version.

The envelope (what the relay stores) is the header view plus nonce,
ciphertext, wrapped keys and blob ids. ``open`` undoes all of this and checks
every claim against the recipient's own verified roster; each refusal carries
the ``reason`` an acknowledgement receipt reports.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import nacl.bindings
import nacl.exceptions

from .constants import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from .encoding import b64d, b64e, canonical, domain_label, parse, require_fields
from ._envelope_shape import (CONTENT_KEY_BYTES, HEADER_VIEW_FIELDS,
                             MESSAGE_ID_BYTES, NONCE_BYTES, bad, check_envelope_shape,
                             check_headers, check_manifest, check_payload, normalise_headers)
from .errors import DecryptionError, EncodingError, EnvelopeError, ForkError, SignatureError
from .hpke import EncryptionKey, EncryptionPublicKey
from .identity import IdentityKey, IdentityPublicKey
from .roster import Member, Roster
from .staleness import Change, acceptance_for, check_signer, check_wrap, stale_changes

# ``open`` is left out so that a star import cannot shadow the builtin: call envelope.open.
__all__ = [
    "MESSAGE_PURPOSE", "OpenedMessage", "check_envelope_shape", "check_headers",
    "check_manifest", "check_payload", "decrypt_with_content_key", "envelope_hash", "header_view",
    "normalise_headers", "payload_hash", "seal", "seal_keeping_key",
]

#: signature purpose of a signed payload: signing input starts ``comity/v1/message\\x00``
MESSAGE_PURPOSE = "message"
#: HPKE info label of a wrapped content key, so a wrap can never be confused with another HPKE use
WRAP_LABEL = "wrap"


# -- hashes the receipts name -------------------------------------------------

def envelope_hash(envelope: Mapping[str, Any]) -> bytes:
    """SHA-256 of canonical(envelope): what the relay's submission receipt names."""
    return hashlib.sha256(canonical(dict(envelope))).digest()


def payload_hash(signed_payload: Mapping[str, Any]) -> bytes:
    """SHA-256 of canonical(signed payload) (= the plaintext): what an ack receipt names."""
    return hashlib.sha256(canonical(dict(signed_payload))).digest()


def header_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the relay sees and the AEAD authenticates (of an envelope or a payload)."""
    return {name: record[name] for name in HEADER_VIEW_FIELDS}


def new_message_id() -> bytes:
    """16 random bytes whose base64url text starts with a letter or digit.

    Ids are typed on command lines (``comity read ID``), where a leading "-"
    reads as an option. Redrawing the 1 in 16 ids that start with "-" or "_"
    costs less than 0.1 bit of the 128.
    """
    while True:
        raw = os.urandom(MESSAGE_ID_BYTES)
        if b64e(raw)[0].isalnum():
            return raw


def _wrap_info(message_id: str, recipient: str, network: str, key_version: int) -> bytes:
    # Binds a wrapped key to one message, one recipient and one of its key versions:
    # a wrap copied into another envelope or relabelled for someone else fails to open.
    record = {"id": message_id, "key_version": key_version, "network": network,
              "recipient": recipient}
    return domain_label(WRAP_LABEL) + b"\x00" + canonical(record)


# -- sealing ------------------------------------------------------------------

def seal(sender: IdentityKey, sender_handle: str, roster: Roster, recipients: Iterable[str],
         headers: Mapping[str, Any], body: str, manifest: Iterable[Mapping[str, Any]] = (),
         *, created: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign and encrypt a message; returns ``(envelope, signed_payload)``.

    ``roster`` is the sender's current verified roster: it names the roster
    head the signature commits to and gives each recipient's encryption key.
    Refuses (``EnvelopeError``) an inactive sender or recipient, an empty,
    duplicated or oversized recipient list, invalid headers or manifest, and a
    message larger than the network policy allows.
    """
    envelope, signed, _ = seal_keeping_key(sender, sender_handle, roster, recipients, headers,
                                           body, manifest, created=created)
    return envelope, signed


def seal_keeping_key(sender: IdentityKey, sender_handle: str, roster: Roster,
                     recipients: Iterable[str], headers: Mapping[str, Any], body: str,
                     manifest: Iterable[Mapping[str, Any]] = (), *, created: int,
                     ) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """``seal``, also returning the content key: ``(envelope, signed_payload, content_key)``.

    The sender keeps the key for evidence bundles (docs/evidence.md): with it a
    verifier decrypts the very envelope the relay accepted. It opens this one
    message and nothing else (attachments have keys of their own).
    """
    content_key = os.urandom(CONTENT_KEY_BYTES)
    envelope, signed = _seal_from_parts(
        sender, sender_handle, roster, recipients, headers, body, manifest, created=created,
        # 128 random bits: ids never collide across every message a network will send.
        message_id=new_message_id(),
        content_key=content_key,
        # XChaCha20 takes a 192-bit nonce, so a random one never repeats in practice;
        # and each content key encrypts exactly one plaintext anyway.
        nonce=os.urandom(NONCE_BYTES),
    )
    return envelope, signed, content_key


def _seal_from_parts(sender: IdentityKey, sender_handle: str, roster: Roster,
                     recipients: Iterable[str], headers: Mapping[str, Any], body: str,
                     manifest: Iterable[Mapping[str, Any]] = (), *, created: int,
                     message_id: bytes, content_key: bytes, nonce: bytes,
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``seal`` with its randomness given: for vectors. HPKE wrapping stays randomized."""
    if len(message_id) != MESSAGE_ID_BYTES or len(content_key) != CONTENT_KEY_BYTES \
            or len(nonce) != NONCE_BYTES:
        raise ValueError("message id, content key or nonce has the wrong length")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise EnvelopeError("created must be Unix seconds (a non-negative integer)",
                            reason="bad-envelope")
    me = roster.member(sender_handle)
    if me is None or not me.active:
        raise EnvelopeError(f"{sender_handle!r} is not an active member of this network",
                            reason="not-a-member")
    if me.identity_key != sender.public:
        raise EnvelopeError("this identity key is not the one the roster holds for "
                            f"{sender_handle!r}", reason="not-a-member")
    if isinstance(recipients, str):
        raise TypeError("recipients is a list of handles, not one string")
    wanted = list(recipients)
    if not wanted:
        raise EnvelopeError("a message needs at least one recipient", reason="bad-envelope")
    if len(set(wanted)) != len(wanted):
        raise EnvelopeError("a recipient is listed twice", reason="bad-envelope")
    policy = roster.policy
    if len(wanted) > policy.max_recipients:
        raise EnvelopeError(f"too many recipients: the network allows {policy.max_recipients}",
                            reason="too-large")
    wrap_to: dict[str, tuple[int, EncryptionPublicKey]] = {}
    for handle in wanted:
        member = roster.member(handle) if isinstance(handle, str) else None
        if member is None or not member.active:
            raise EnvelopeError(f"{handle!r} is not an active member of this network",
                                reason="not-a-member")
        if member.encryption_key_not_after < created:
            raise EnvelopeError(f"{handle}'s encryption key expired; they must rotate it first",
                                reason="expired-key")
        wrap_to[handle] = (member.encryption_key_version, member.encryption_key)
    entries = [dict(entry) if isinstance(entry, Mapping) else entry for entry in manifest]
    if len(entries) > policy.max_attachments:
        raise EnvelopeError(f"too many attachments: the network allows {policy.max_attachments}",
                            reason="too-large")
    for entry in entries:
        size = entry.get("size") if isinstance(entry, dict) else None
        if isinstance(size, int) and size > policy.max_attachment_bytes:
            raise EnvelopeError(f"attachment {entry.get('name')!r} is larger than the network "
                                "allows", reason="too-large")
    payload = {
        "v": PROTOCOL_VERSION,
        "id": b64e(message_id),
        "network": b64e(roster.genesis_hash),
        "sender": sender_handle,
        "recipients": sorted(wanted),
        "created": created,
        "roster_head": roster.head(),
        "headers": normalise_headers(headers),
        "body": body,
        "manifest": entries,
    }
    check_payload(payload)
    signed = {"payload": payload, "sig": sender.sign_b64(MESSAGE_PURPOSE, payload)}
    plaintext = canonical(signed)
    if len(plaintext) > min(policy.max_message_bytes, MAX_MESSAGE_BYTES):
        raise EnvelopeError("the message is larger than the network allows; "
                            "send long documents as attachments", reason="too-large")
    envelope = _encrypt(header_view(payload), plaintext, wrap_to,
                        [entry["blob"] for entry in entries], content_key, nonce)
    return envelope, signed


def _encrypt(view: dict[str, Any], plaintext: bytes,
             wrap_to: Mapping[str, tuple[int, EncryptionPublicKey]], blobs: list[str],
             content_key: bytes, nonce: bytes) -> dict[str, Any]:
    """Encrypt ``plaintext`` under ``view`` and wrap the key; no checks (vectors use it raw)."""
    # The header view is the associated data: the relay cannot re-label id, network,
    # sender, recipients or time without the recipients' decryption failing.
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, canonical(view), nonce, content_key)
    wrapped = {
        handle: {"key_version": version,
                 "sealed": b64e(public.seal(content_key, _wrap_info(
                     view["id"], handle, view["network"], version)))}
        for handle, (version, public) in sorted(wrap_to.items())
    }
    envelope = {**view, "nonce": b64e(nonce), "ciphertext": b64e(ciphertext),
                "wrapped": wrapped, "blobs": list(blobs)}
    return envelope


# -- opening ------------------------------------------------------------------

def _decrypt(envelope: Mapping[str, Any], content_key: bytes) -> bytes:
    """The AEAD step of opening: the plaintext, or one opaque ``DecryptionError``."""
    if not isinstance(content_key, bytes) or len(content_key) != CONTENT_KEY_BYTES:
        raise DecryptionError(reason="decryption-failed")
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            b64d(envelope["ciphertext"]), canonical(header_view(envelope)),
            b64d(envelope["nonce"]), content_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise DecryptionError(reason="decryption-failed") from None


def decrypt_with_content_key(envelope: Any, content_key: bytes) -> bytes:
    """The plaintext of ``envelope`` under its content key, as an evidence bundle carries it.

    For a valid message that is ``canonical(signed payload)``; comparing the two
    proves the envelope the relay accepted holds exactly that signed message.
    Raises ``EnvelopeError`` for a malformed envelope, ``DecryptionError`` otherwise.
    """
    check_envelope_shape(envelope)
    return _decrypt(envelope, content_key)


@dataclass(frozen=True, eq=False, repr=False)
class OpenedMessage:
    """A message whose decryption, signature and roster checks all passed."""

    envelope: dict[str, Any]
    signed_payload: dict[str, Any]
    payload: dict[str, Any]
    sender: Member            # the sender as the roster at ``roster_head`` describes it
    roster: Roster            # our own roster at the seq the sender named
    key_version: int          # which of our encryption keys opened it
    #: the relay's verified submission-accepted receipt for this envelope, if it gave one
    acceptance: dict | None = None
    #: log changes the sender had not seen when it sealed (with ``latest`` only): report them
    stale: tuple[Change, ...] = ()

    @property
    def id(self) -> str:
        return self.payload["id"]

    @property
    def headers(self) -> dict[str, Any]:
        return self.payload["headers"]

    @property
    def body(self) -> str:
        return self.payload["body"]

    @property
    def manifest(self) -> list[dict[str, Any]]:
        return self.payload["manifest"]

    def payload_hash(self) -> bytes:
        return payload_hash(self.signed_payload)

    def envelope_hash(self) -> bytes:
        return envelope_hash(self.envelope)

    def __repr__(self) -> str:
        # No subject or body: a repr ends up in logs.
        return f"OpenedMessage(id={self.id!r}, sender={self.sender.handle!r})"


def open(envelope: Any, *, recipient_handle: str,
         decryption_keys: Mapping[int, EncryptionKey],
         roster_at: Callable[[int], Roster],
         latest: Roster | None = None, acceptance: dict | None = None,
         relay_key: IdentityPublicKey | None = None, now: int | None = None) -> OpenedMessage:
    """Decrypt and verify ``envelope`` for ``recipient_handle``.

    ``decryption_keys`` maps our encryption key versions to private keys (old
    ones included, so messages sealed before a rotation still open).
    ``roster_at(seq)`` returns our own verified roster at ``seq``; whatever it
    raises (e.g. we have not fetched that far yet) propagates unchanged.
    ``latest``, our newest roster, if given, holds the message to what we know
    now (keys/staleness.py): a sender removed or an identity key replaced since
    the head it named counts only if ``acceptance`` (the relay's
    submission-accepted receipt, checked under ``relay_key``, the relay's key) shows
    the message reached the relay before that entry; content wrapped to a key
    we had retired is refused; other changes the sender missed are returned in
    ``stale``. ``now`` (our clock) bounds how old such an acceptance may be.

    Raises ``DecryptionError`` (reason ``decryption-failed``) or an
    ``EnvelopeError`` whose ``reason`` is one of ``bad-envelope``,
    ``not-a-recipient``, ``fork`` (``ForkError``), ``unknown-sender``,
    ``removed-member``, ``bad-signature``, ``superseded-key``, ``retired-key``.
    """
    check_envelope_shape(envelope)
    wrap = envelope["wrapped"].get(recipient_handle)
    if wrap is None:
        raise EnvelopeError(f"this message is not addressed to {recipient_handle!r}",
                            reason="not-a-recipient")
    key = decryption_keys.get(wrap["key_version"])
    if key is None:
        raise DecryptionError(f"no private key for encryption key version {wrap['key_version']}"
                              " (destroyed after rotation?)", reason="decryption-failed")
    view = header_view(envelope)
    content_key = key.open(b64d(wrap["sealed"]), _wrap_info(
        view["id"], recipient_handle, view["network"], wrap["key_version"]))
    plaintext = _decrypt(envelope, content_key)

    try:
        signed = parse(plaintext)
    except EncodingError:
        raise bad("the decrypted message is not valid comity JSON") from None
    require_fields(signed, {"payload", "sig"}, what="signed payload", error=bad)
    if canonical(signed) != plaintext:
        # One byte string per message, so payload_hash is the hash of what was sent.
        raise bad("the decrypted message is not in canonical form")
    payload = check_payload(signed["payload"])
    if recipient_handle not in payload["recipients"]:
        raise EnvelopeError(f"the signed message is not addressed to {recipient_handle!r}",
                            reason="not-a-recipient")
    for name in HEADER_VIEW_FIELDS:
        if payload[name] != envelope[name]:
            raise bad(f"the envelope's {name} differs from the signed message")
    if envelope["blobs"] != [entry["blob"] for entry in payload["manifest"]]:
        raise bad("the envelope's blobs differ from the signed attachment manifest")

    head = payload["roster_head"]
    roster = roster_at(head["seq"])
    if roster.seq != head["seq"]:
        raise ValueError(f"roster_at({head['seq']}) returned the roster at seq {roster.seq}")
    if b64e(roster.genesis_hash) != payload["network"]:
        raise bad("the message belongs to another network")
    if not hmac.compare_digest(roster.head_hash, b64d(head["hash"])):
        raise ForkError(f"the sender's membership log differs from ours at seq {head['seq']}",
                        reason="fork")
    sender = roster.member(payload["sender"])
    if sender is None:
        raise EnvelopeError(f"{payload['sender']!r} is not a member at seq {head['seq']}",
                            reason="unknown-sender")
    if not sender.active:
        raise EnvelopeError(f"{sender.handle!r} has been removed from the network",
                            reason="removed-member")
    try:
        sender.identity_key.verify(MESSAGE_PURPOSE, payload, signed["sig"])
    except SignatureError:
        raise EnvelopeError(f"the signature is not by {sender.handle}'s key in the roster",
                            reason="bad-signature") from None
    accepted = acceptance_for(acceptance, envelope, relay_key)
    stale: tuple[Change, ...] = ()
    if latest is not None:
        check_signer(sender, head["seq"], latest, roster_at, accepted, now)
        check_wrap(recipient_handle, wrap["key_version"], payload, latest, roster_at, accepted)
        stale = stale_changes(payload, roster_at, latest, accepted)
    return OpenedMessage(envelope=envelope, signed_payload=signed, payload=payload,
                         sender=sender, roster=roster, key_version=wrap["key_version"],
                         acceptance=accepted, stale=stale)
