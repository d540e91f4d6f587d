"""Invite codes and the enrollment MAC.

An invite code is one line an admin hands to a new member out of band::

    comity-invite-1.<base64url(body || checksum)>

    body     = relay_fingerprint (20) || network_hash (32) || secret (32)
               || str8(relay_url) || str8(network) || str8(handle) || str8(role)
    str8(s)  = one length byte || UTF-8 of s
    checksum = SHA-256("comity/v1/invite-checksum" || 0x00 || body)[:4]

The checksum only catches typos; the code itself is secret and must travel on
a channel the admin trusts. From the secret come two unrelated values:

* ``invite_id``  = SHA-256("comity/v1/invite-id" || 0x00 || secret): the relay
  stores it and the enrollee presents it;
* the MAC key    = HKDF-SHA256(secret, info "comity/v1/enroll-mac"): it
  authenticates the enrollee's keys to the admin. The relay, knowing only
  ``invite_id``, cannot compute it, so it cannot substitute keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .constants import HANDLE_PATTERN, NETWORK_NAME_PATTERN, PROTOCOL_VERSION, ROLES
from .encoding import b64d, b64e, canonical, domain_label
from .errors import EncodingError, InviteError, KeyFormatError, SignatureError
from .hpke import EncryptionPublicKey, verify_key_record
from .identity import FINGERPRINT_BYTES, IdentityKey, IdentityPublicKey, format_fingerprint

PREFIX = "comity-invite-"
CODE_PREFIX = f"{PREFIX}{PROTOCOL_VERSION}."
#: 256 bits from os.urandom: unguessable, and a full-strength HKDF input
SECRET_BYTES = 32
#: SHA-256 of the genesis entry
NETWORK_HASH_BYTES = 32
#: 32-bit checksum: a random typo slips through once in four billion; it is not a MAC
CHECKSUM_BYTES = 4
#: a str8 length byte caps every text field at 255 bytes; relay URLs are far shorter
MAX_RELAY_URL = 255
_FIXED = FINGERPRINT_BYTES + NETWORK_HASH_BYTES + SECRET_BYTES

CHECKSUM_LABEL = domain_label("invite-checksum")
INVITE_ID_LABEL = domain_label("invite-id")
#: distinct from INVITE_ID_LABEL: what the relay holds reveals nothing about the MAC key
ENROLL_MAC_LABEL = domain_label("enroll-mac")

REQUEST_FIELDS = {"invite_id", "network", "handle", "identity_key", "encryption_key", "mac"}
MAC_BYTES = 32

#: the characters RFC 3986 allows in a URL (query and fragment are refused separately)
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")

NOT_AN_INVITE = f"this is not a comity invite code (one starts with {CODE_PREFIX})"
MISTYPED = "invite code is mistyped or incomplete (checksum does not match)"


def _fail(reason: str, message: str) -> InviteError:
    return InviteError(message, reason=reason)


def check_relay_url(url: Any) -> str:
    """An http(s) URL with a host; no credentials, query, fragment or non-URL characters."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_RELAY_URL:
        raise _fail("bad-field", f"relay URL must be 1 to {MAX_RELAY_URL} characters")
    if not _URL_CHARS.fullmatch(url):
        raise _fail("bad-field", "relay URL has characters a URL may not contain (or spaces)")
    if not url.startswith(("http://", "https://")):
        raise _fail("bad-field", "relay URL must start with https:// (or http://)")
    try:
        parts = urlsplit(url)
        parts.port                              # raises ValueError on a bad port
    except ValueError:
        raise _fail("bad-field", "relay URL is not a valid URL") from None
    if not parts.hostname:
        raise _fail("bad-field", "relay URL has no host")
    if "@" in parts.netloc:
        raise _fail("bad-field", "relay URL must not carry a user name or password")
    if "?" in url or "#" in url:
        raise _fail("bad-field", "relay URL must not have a query or fragment")
    return url


def _check_fields(inv: "Invite") -> None:
    check_relay_url(inv.relay_url)
    for name, size in (("relay_fingerprint", FINGERPRINT_BYTES),
                       ("network_hash", NETWORK_HASH_BYTES), ("secret", SECRET_BYTES)):
        value = getattr(inv, name)
        if not isinstance(value, bytes) or len(value) != size:
            raise _fail("bad-field", f"invite {name} must be {size} bytes")
    if not isinstance(inv.network, str) or not re.fullmatch(NETWORK_NAME_PATTERN, inv.network):
        raise _fail("bad-field", "invite network name is not valid")
    if not isinstance(inv.handle, str) or not re.fullmatch(HANDLE_PATTERN, inv.handle):
        raise _fail("bad-field", "invite handle is not valid (3-64 of a-z 0-9 . -)")
    if inv.role not in ROLES:
        raise _fail("bad-field", f"invite role must be one of {', '.join(ROLES)}")


def _str8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:                         # one length byte; validation keeps us under
        raise _fail("bad-field", "an invite text field is longer than 255 bytes")
    return bytes([len(data)]) + data


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(CHECKSUM_LABEL + b"\x00" + body).digest()[:CHECKSUM_BYTES]


def _seal(body: bytes) -> str:
    """Code text for ``body`` (exposed to the vector generator for malformed bodies)."""
    return CODE_PREFIX + b64e(body + _checksum(body))


@dataclass(frozen=True, repr=False)
class Invite:
    """What an invite code carries. ``repr`` never shows the secret."""

    relay_url: str
    relay_fingerprint: bytes
    network: str
    network_hash: bytes
    handle: str
    role: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_fields(self)

    def __repr__(self) -> str:
        # The secret is left out on purpose: whoever holds it can enroll.
        return (f"Invite(handle={self.handle!r}, role={self.role!r}, network={self.network!r}, "
                f"relay_url={self.relay_url!r}, "
                f"relay_fingerprint={format_fingerprint(self.relay_fingerprint)!r})")

    @classmethod
    def create(cls, *, relay_url: str, relay_fingerprint: bytes, network: str,
               network_hash: bytes, handle: str, role: str) -> "Invite":
        """A new invite with a fresh one-time secret."""
        return cls(relay_url, relay_fingerprint, network, network_hash, handle, role,
                   os.urandom(SECRET_BYTES))

    @property
    def invite_id(self) -> bytes:
        return invite_id(self.secret)

    def to_code(self) -> str:
        body = (self.relay_fingerprint + self.network_hash + self.secret + _str8(self.relay_url)
                + _str8(self.network) + _str8(self.handle) + _str8(self.role))
        return _seal(body)

    @classmethod
    def from_code(cls, code: str) -> "Invite":
        """Decode and check a code. White space anywhere (line wraps) is ignored."""
        if not isinstance(code, str):
            raise _fail("bad-encoding", "an invite code is text")
        code = "".join(code.split())
        if not code.startswith(PREFIX):
            raise _fail("wrong-prefix", NOT_AN_INVITE)
        version, dot, text = code[len(PREFIX):].partition(".")
        if version != str(PROTOCOL_VERSION):
            if dot and version.isascii() and version.isdigit() and int(version) > PROTOCOL_VERSION:
                raise _fail("unsupported-version", f"this invite needs a newer comity "
                                                   f"(invite format {version})")
            raise _fail("wrong-prefix", NOT_AN_INVITE)
        if not text:
            raise _fail("mistyped", MISTYPED)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
            raise _fail("bad-encoding", f"invite code has characters that cannot be in one: "
                                        f"after {CODE_PREFIX} only A-Z a-z 0-9 - _")
        try:
            data = b64d(text, what="invite code")
        except EncodingError:
            raise _fail("mistyped", MISTYPED) from None   # cut at a bad length, or a typo
        body, check = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if len(data) < _FIXED + 4 + CHECKSUM_BYTES or not hmac.compare_digest(
                check, _checksum(body)):
            raise _fail("mistyped", MISTYPED)
        return cls._from_body(body)

    @classmethod
    def _from_body(cls, body: bytes) -> "Invite":
        fp, rest = body[:FINGERPRINT_BYTES], body[FINGERPRINT_BYTES:]
        net_hash, rest = rest[:NETWORK_HASH_BYTES], rest[NETWORK_HASH_BYTES:]
        secret, rest = rest[:SECRET_BYTES], rest[SECRET_BYTES:]
        texts = []
        for _ in range(4):
            if not rest or len(rest) < 1 + rest[0]:
                raise _fail("bad-field", "invite code fields are cut short")
            raw, rest = rest[1:1 + rest[0]], rest[1 + rest[0]:]
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise _fail("bad-field", "invite code text is not UTF-8") from None
        if rest:
            raise _fail("bad-field", "invite code has trailing data")
        url, network, handle, role = texts
        return cls(url, fp, network, net_hash, handle, role, secret)


def invite_id(secret: bytes) -> bytes:
    """SHA-256("comity/v1/invite-id" || 0x00 || secret): the relay's handle on an invite."""
    _check_secret(secret)
    return hashlib.sha256(INVITE_ID_LABEL + b"\x00" + secret).digest()


def _check_secret(secret: Any) -> None:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise _fail("bad-field", f"an invite secret is {SECRET_BYTES} bytes")


# -- enrollment MAC ---------------------------------------------------------------

def _mac_key(secret: bytes) -> bytes:
    _check_secret(secret)
    # No salt: the secret is already 32 uniform random bytes (RFC 5869 section 3.1).
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=ENROLL_MAC_LABEL).derive(bytes(secret))


def _mac_input(network_hash: bytes, handle: str, identity_key_b64: str,
               encryption_key_record: dict) -> bytes:
    try:
        return canonical({"network": b64e(network_hash), "handle": handle,
                          "identity_key": identity_key_b64,
                          "encryption_key": encryption_key_record})
    except EncodingError as exc:
        raise _fail("bad-request", f"enrollment request: {exc.message}") from None


def enrollment_mac(secret: bytes, network_hash: bytes, handle: str, identity_key_b64: str,
                   encryption_key_record: dict) -> bytes:
    """HMAC-SHA256 under the invite's MAC key over the enrollee's keys (32 bytes)."""
    message = _mac_input(network_hash, handle, identity_key_b64, encryption_key_record)
    return hmac.new(_mac_key(secret), message, hashlib.sha256).digest()


def verify_enrollment_mac(secret: bytes, network_hash: bytes, handle: str,
                          identity_key_b64: str, encryption_key_record: dict,
                          mac: bytes) -> None:
    """Raise ``InviteError(reason="bad-mac")`` unless ``mac`` matches (constant time)."""
    expected = enrollment_mac(secret, network_hash, handle, identity_key_b64,
                              encryption_key_record)
    if not isinstance(mac, (bytes, bytearray)) or not hmac.compare_digest(expected, bytes(mac)):
        raise _fail("bad-mac", "the enrollment request was not made with this invite's "
                               "secret: its keys may have been substituted")


def make_enrollment_request(invite: Invite, identity: IdentityKey,
                            encryption_key_record: dict) -> dict:
    """The request the enrollee sends the relay (and, through it, the admin)."""
    try:
        verify_key_record(encryption_key_record, identity.public)
    except (KeyFormatError, EncodingError, SignatureError):
        raise _fail("bad-key-record", "the encryption key record is not signed by this "
                                      "identity key") from None
    identity_b64 = identity.public.b64()
    mac = enrollment_mac(invite.secret, invite.network_hash, invite.handle, identity_b64,
                         encryption_key_record)
    return {"invite_id": b64e(invite.invite_id), "network": b64e(invite.network_hash),
            "handle": invite.handle, "identity_key": identity_b64,
            "encryption_key": encryption_key_record, "mac": b64e(mac)}


def check_enrollment_request(request: Any) -> dict:
    """Shape checks the relay can do (it cannot check the MAC); returns the request."""
    if not isinstance(request, dict):
        raise _fail("bad-request", "enrollment request must be a JSON object")
    missing, unknown = REQUEST_FIELDS - request.keys(), request.keys() - REQUEST_FIELDS
    if missing or unknown:
        raise _fail("bad-request", "enrollment request must have exactly the fields "
                                   + ", ".join(sorted(REQUEST_FIELDS)))
    try:
        b64d(request["invite_id"], length=32, what="invite_id")
        b64d(request["network"], length=NETWORK_HASH_BYTES, what="network")
        b64d(request["mac"], length=MAC_BYTES, what="mac")
        IdentityPublicKey.from_b64(request["identity_key"])
    except (EncodingError, KeyFormatError) as exc:
        raise _fail("bad-request", f"enrollment request: {exc.message}") from None
    if not isinstance(request["handle"], str) or not re.fullmatch(HANDLE_PATTERN,
                                                                  request["handle"]):
        raise _fail("bad-request", "enrollment request: handle is not valid")
    if not isinstance(request["encryption_key"], dict):
        raise _fail("bad-request", "enrollment request: encryption_key must be a key record")
    return request


def verify_enrollment_request(request: Any, invite: Invite
                              ) -> tuple[IdentityPublicKey, EncryptionPublicKey]:
    """Admin side: the request answers ``invite`` and its keys are the enrollee's.

    Checks shape, invite id, network, handle, the MAC (so the relay did not
    swap keys) and the key record's signature under the identity key (so the
    enrollee holds that key). Returns the identity and encryption public keys.
    """
    check_enrollment_request(request)
    if request["invite_id"] != b64e(invite.invite_id):
        raise _fail("wrong-invite", "the enrollment request answers a different invite")
    if request["network"] != b64e(invite.network_hash):
        raise _fail("wrong-network", "the enrollment request is for a different network")
    if request["handle"] != invite.handle:
        raise _fail("wrong-handle", f"the enrollment request is for another handle than "
                                    f"{invite.handle}")
    verify_enrollment_mac(invite.secret, invite.network_hash, invite.handle,
                          request["identity_key"], request["encryption_key"],
                          b64d(request["mac"]))
    identity = IdentityPublicKey.from_b64(request["identity_key"])
    try:
        encryption = verify_key_record(request["encryption_key"], identity)
    except (KeyFormatError, EncodingError, SignatureError):
        raise _fail("bad-key-record", "the encryption key record is not validly signed by "
                                      "the enrollee's identity key") from None
    return identity, encryption
