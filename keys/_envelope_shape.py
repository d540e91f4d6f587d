"""Shape checks for envelopes, signed payloads, headers and manifests.

Structure only: field sets, types, sizes and allowed values. No keys, no
crypto. The relay runs ``check_envelope_shape`` before it stores anything;
``keys.envelope.open`` runs the same checks on what it decrypts. Every refusal
is an ``EnvelopeError`` with reason ``bad-envelope`` (``too-large`` for sizes
over a limit). Import these through ``keys.envelope``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .constants import (HANDLE_PATTERN, MAX_ATTACHMENT_NAME, MAX_ATTACHMENTS, MAX_BLOB_ID,
                        MAX_HANDLING, MAX_LANGUAGE, MAX_LEGAL_BASIS, MAX_MEDIA_TYPE,
                        MAX_MESSAGE_BYTES, MAX_RECIPIENTS, MAX_REFERENCE, MAX_SUBJECT,
                        PROTOCOL_VERSION)
from .encoding import MAX_SAFE_INTEGER, b64d, require_fields
from .errors import EncodingError, EnvelopeError
from .roster import Policy

#: 128 random bits: message ids never collide across a network's lifetime
MESSAGE_ID_BYTES = 16
#: XChaCha20-Poly1305 key size
CONTENT_KEY_BYTES = 32
#: XChaCha20 nonce: 192 bits, so drawing it at random is safe
NONCE_BYTES = 24
#: Poly1305 tag appended to every AEAD ciphertext
TAG_BYTES = 16
#: SHA-256: genesis hash, roster head hash, attachment ciphertext hash
HASH_BYTES = 32
#: HPKE ``enc`` of MLKEM768_X25519: ML-KEM-768 ciphertext (1088) + X25519 ephemeral key (32)
HPKE_ENC_BYTES = 1088 + 32
#: a wrapped content key: enc || content key || tag
WRAPPED_KEY_BYTES = HPKE_ENC_BYTES + CONTENT_KEY_BYTES + TAG_BYTES

MESSAGE_TYPES = ("request", "reply", "information", "receipt")
PRIORITIES = ("routine", "urgent")
#: a reply or a receipt always names the message it answers
ANSWER_TYPES = ("reply", "receipt")

HEADER_VIEW_FIELDS = ("v", "id", "network", "sender", "recipients", "created")
ENVELOPE_FIELDS = frozenset(HEADER_VIEW_FIELDS) | {"nonce", "ciphertext", "wrapped", "blobs"}
PAYLOAD_FIELDS = frozenset(HEADER_VIEW_FIELDS) | {"roster_head", "headers", "body", "manifest"}
HEADER_FIELDS = frozenset({"type", "subject", "reference", "priority", "legal_basis",
                           "deadline", "in_reply_to", "language", "handling"})
REQUIRED_HEADERS = ("type", "subject")
#: what an omitted optional header becomes: every payload carries all nine fields
HEADER_DEFAULTS = {"priority": "routine", "reference": None, "legal_basis": None,
                   "deadline": None, "in_reply_to": None, "language": None, "handling": None}
MANIFEST_FIELDS = frozenset({"name", "media_type", "size", "blob", "key", "hash",
                             "ciphertext_size"})

_HANDLE_RE = re.compile(HANDLE_PATTERN)
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_BLOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# C0/C1 controls (terminal escapes) and bidi overrides ("invoice\u202efdp.exe") are
# refused in one-line fields a client prints or uses as a file name.
_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def bad(message: str, reason: str = "bad-envelope") -> EnvelopeError:
    return EnvelopeError(message, reason=reason)


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) \
            or not minimum <= value <= MAX_SAFE_INTEGER:
        raise bad(f"{what} must be an integer >= {minimum}")
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise bad(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise bad(f"{what} is longer than {limit} characters")
    if _UNSAFE_RE.search(value):
        raise bad(f"{what} contains control or direction-override characters")
    return value


def _b64(value: Any, what: str, length: int | None = None) -> bytes:
    try:
        return b64d(value, length=length, what=what)
    except EncodingError as exc:
        raise bad(exc.message) from None


def _handles(value: Any, what: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not value:
        raise bad(f"{what} must be a non-empty list of handles")
    if len(value) > limit:
        raise bad(f"{what}: more than {limit}", reason="too-large")
    for handle in value:
        if not isinstance(handle, str) or not _HANDLE_RE.fullmatch(handle):
            raise bad(f"{what}: {handle!r} is not a valid handle")
    if value != sorted(set(value)):
        raise bad(f"{what} must be sorted and without duplicates")
    return value


def _blob_ids(value: Any, limit: int) -> list[str]:
    if not isinstance(value, list):
        raise bad("blobs must be a list")
    if len(value) > limit:
        raise bad(f"more than {limit} attachments", reason="too-large")
    for blob in value:
        if not isinstance(blob, str) or len(blob) > MAX_BLOB_ID or not _BLOB_ID_RE.fullmatch(blob):
            raise bad(f"blob id {blob!r} is not valid")
    if len(set(value)) != len(value):
        raise bad("an attachment blob is listed twice")
    return value


def _check_view(record: Mapping[str, Any], max_recipients: int) -> None:
    v = record["v"]
    if not isinstance(v, int) or isinstance(v, bool) or v != PROTOCOL_VERSION:
        raise bad(f"unsupported message version {v!r}; this client reads {PROTOCOL_VERSION}")
    _b64(record["id"], "message id", MESSAGE_ID_BYTES)
    _b64(record["network"], "network", HASH_BYTES)
    sender = record["sender"]
    if not isinstance(sender, str) or not _HANDLE_RE.fullmatch(sender):
        raise bad(f"sender {sender!r} is not a valid handle")
    _handles(record["recipients"], "recipients", max_recipients)
    _int(record["created"], "created")


def normalise_headers(headers: Any) -> dict[str, Any]:
    """Fill in omitted optional headers with their defaults, then check them."""
    if not isinstance(headers, Mapping):
        raise bad("headers must be an object")
    missing = [name for name in REQUIRED_HEADERS if name not in headers]
    if missing:
        raise bad(f"headers lack: {', '.join(missing)}")
    return check_headers({**HEADER_DEFAULTS, **headers})


def check_headers(headers: Any) -> dict[str, Any]:
    """Check a complete header object as a payload carries it (all nine fields)."""
    h = require_fields(headers, set(HEADER_FIELDS), what="headers", error=bad)
    if not isinstance(h["type"], str) or h["type"] not in MESSAGE_TYPES:
        raise bad(f"type must be one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(h["priority"], str) or h["priority"] not in PRIORITIES:
        raise bad(f"priority must be one of {', '.join(PRIORITIES)}")
    _text(h["subject"], "subject", MAX_SUBJECT)
    # Absent optional values are null, never "": one spelling per meaning.
    for name, limit in (("reference", MAX_REFERENCE), ("legal_basis", MAX_LEGAL_BASIS),
                        ("handling", MAX_HANDLING)):
        if h[name] is not None:
            _text(h[name], name, limit)
    if h["language"] is not None and (not isinstance(h["language"], str)
                                      or len(h["language"]) > MAX_LANGUAGE
                                      or not _LANGUAGE_RE.fullmatch(h["language"])):
        raise bad("language must be a language tag such as 'en' or 'pt-BR'")
    if h["deadline"] is not None:
        _int(h["deadline"], "deadline")
    if h["in_reply_to"] is not None:
        _b64(h["in_reply_to"], "in_reply_to", MESSAGE_ID_BYTES)
    elif h["type"] in ANSWER_TYPES:
        raise bad(f"a {h['type']} must name the message it answers in in_reply_to")
    return h


def check_manifest(manifest: Any, limit: int = MAX_ATTACHMENTS) -> list[dict[str, Any]]:
    if not isinstance(manifest, list):
        raise bad("manifest must be a list")
    if len(manifest) > limit:
        raise bad(f"more than {limit} attachments", reason="too-large")
    for entry in manifest:
        require_fields(entry, set(MANIFEST_FIELDS), what="attachment", error=bad)
        name = _text(entry["name"], "attachment name", MAX_ATTACHMENT_NAME)
        # A bare file name: the receiving client may write it to disk.
        if name in (".", "..") or "/" in name or "\\" in name:
            raise bad(f"attachment name {name!r} is not a plain file name")
        media = entry["media_type"]
        if not isinstance(media, str) or len(media) > MAX_MEDIA_TYPE \
                or not _MEDIA_TYPE_RE.fullmatch(media):
            raise bad(f"media type {media!r} is not valid")
        size = _int(entry["size"], "attachment size")
        if _int(entry["ciphertext_size"], "attachment ciphertext_size") < size:
            raise bad("attachment ciphertext_size is smaller than its size")
        _b64(entry["key"], "attachment key", CONTENT_KEY_BYTES)
        _b64(entry["hash"], "attachment hash", HASH_BYTES)
    _blob_ids([entry["blob"] for entry in manifest], limit)
    return manifest


def check_payload(payload: Any) -> dict[str, Any]:
    """Check a payload (the record the sender signs)."""
    require_fields(payload, set(PAYLOAD_FIELDS), what="payload", error=bad)
    _check_view(payload, MAX_RECIPIENTS)
    head = require_fields(payload["roster_head"], {"seq", "hash"}, what="roster_head", error=bad)
    _int(head["seq"], "roster_head seq")
    _b64(head["hash"], "roster_head hash", HASH_BYTES)
    check_headers(payload["headers"])
    body = payload["body"]
    if not isinstance(body, str):
        raise bad("body must be a string")
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("body is not valid Unicode") from None
    check_manifest(payload["manifest"])
    return payload


def check_envelope_shape(envelope: Any, policy: Policy | None = None) -> dict[str, Any]:
    """Check an envelope's structure and limits, as the relay must before storing it.

    Unknown fields are refused. With ``policy`` (the network's), its limits
    apply on top of the hard ceilings in ``keys.constants``. Proves nothing
    about who sent it: only the recipients can check that.
    """
    require_fields(envelope, set(ENVELOPE_FIELDS), what="envelope", error=bad)
    max_recipients, max_attachments, max_bytes = MAX_RECIPIENTS, MAX_ATTACHMENTS, \
        MAX_MESSAGE_BYTES
    if policy is not None:
        max_recipients = min(max_recipients, policy.max_recipients)
        max_attachments = min(max_attachments, policy.max_attachments)
        max_bytes = min(max_bytes, policy.max_message_bytes)
    _check_view(envelope, max_recipients)
    _b64(envelope["nonce"], "nonce", NONCE_BYTES)
    ciphertext = envelope["ciphertext"]
    # Size from the text length first, so an oversized envelope is not even decoded.
    if isinstance(ciphertext, str) and len(ciphertext) > (4 * (max_bytes + TAG_BYTES) + 2) // 3:
        raise bad(f"the message is larger than {max_bytes} bytes", reason="too-large")
    if len(_b64(ciphertext, "ciphertext")) <= TAG_BYTES:
        raise bad("ciphertext is too short")
    wrapped = envelope["wrapped"]
    if not isinstance(wrapped, dict) or set(wrapped) != set(envelope["recipients"]):
        raise bad("wrapped must hold exactly one key per recipient")
    for handle, wrap in wrapped.items():
        require_fields(wrap, {"key_version", "sealed"}, what=f"wrapped key of {handle}",
                       error=bad)
        _int(wrap["key_version"], "key_version", minimum=1)
        _b64(wrap["sealed"], f"wrapped key of {handle}", WRAPPED_KEY_BYTES)
    _blob_ids(envelope["blobs"], max_attachments)
    return envelope
