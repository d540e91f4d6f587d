"""Ed25519 identity keys, fingerprints and safety numbers.

Signatures are plain RFC 8032 Ed25519 (libsodium through pynacl) over
``signing_input(purpose, record)``, so anyone can check one with OpenSSL:
write the signing input to a file and run
``openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in input -sigfile sig``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import nacl.exceptions
import nacl.signing

from .encoding import b64d, b64e, domain_label, signing_input
from .errors import EncodingError, KeyFormatError, SignatureError

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64
#: 160 bits: collision-resistant enough for humans comparing keys, short enough to read aloud
FINGERPRINT_BYTES = 20
#: 6 groups of 5 digits (about 100 bits) read out over the phone
SAFETY_NUMBER_GROUPS = 6


class IdentityPublicKey:
    """An Ed25519 public key that verifies comity signatures."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes):
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_BYTES:
            raise KeyFormatError("an identity public key is 32 bytes")
        self.raw = bytes(raw)
        try:
            self._key = nacl.signing.VerifyKey(self.raw)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise KeyFormatError("not a valid Ed25519 public key") from None

    @classmethod
    def from_b64(cls, text: str) -> "IdentityPublicKey":
        try:
            raw = b64d(text, length=PUBLIC_KEY_BYTES, what="identity key")
        except EncodingError as exc:
            raise KeyFormatError(exc.message) from None
        return cls(raw)

    def b64(self) -> str:
        return b64e(self.raw)

    def verify_raw(self, message: bytes, signature: bytes) -> None:
        """Verify a signature over exact bytes; raises ``SignatureError``."""
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureError(reason="bad-signature")
        try:
            self._key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise SignatureError(reason="bad-signature") from None

    def verify(self, purpose: str, record: Any, signature: bytes | str) -> None:
        """Verify ``signature`` (raw or base64url) on ``record`` under ``purpose``."""
        if isinstance(signature, str):
            try:
                signature = b64d(signature, length=SIGNATURE_BYTES, what="signature")
            except EncodingError:
                raise SignatureError(reason="bad-signature") from None
        if not isinstance(signature, (bytes, bytearray)):
            raise SignatureError(reason="bad-signature")
        self.verify_raw(signing_input(purpose, record), bytes(signature))

    def fingerprint(self) -> bytes:
        return fingerprint(self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"IdentityPublicKey({format_fingerprint(self.fingerprint())})"


class IdentityKey:
    """An Ed25519 signing key. Its seed never appears in ``repr`` or errors."""

    __slots__ = ("_signing", "public")

    def __init__(self, signing_key: nacl.signing.SigningKey):
        self._signing = signing_key
        self.public = IdentityPublicKey(bytes(signing_key.verify_key))

    @classmethod
    def generate(cls) -> "IdentityKey":
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "IdentityKey":
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise KeyFormatError("an identity key seed is 32 bytes")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    def seed(self) -> bytes:
        """The 32-byte secret seed, for the encrypted keystore only."""
        return bytes(self._signing)

    def sign_raw(self, message: bytes) -> bytes:
        return self._signing.sign(message).signature

    def sign(self, purpose: str, record: Any) -> bytes:
        """Sign ``record`` under ``purpose``; returns the 64-byte signature."""
        return self.sign_raw(signing_input(purpose, record))

    def sign_b64(self, purpose: str, record: Any) -> str:
        return b64e(self.sign(purpose, record))

    def __repr__(self) -> str:
        return f"IdentityKey({format_fingerprint(self.public.fingerprint())})"


def fingerprint(public_key: bytes) -> bytes:
    """First 20 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).digest()[:FINGERPRINT_BYTES]


def format_fingerprint(fp: bytes) -> str:
    """Lowercase hex in groups of 4: ``3f2a 9c01 ...`` (10 groups)."""
    text = fp.hex()
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


def parse_fingerprint(text: str) -> bytes:
    """Accept a fingerprint as printed (any spacing or case)."""
    cleaned = "".join(text.split()).lower()
    try:
        fp = bytes.fromhex(cleaned)
    except ValueError:
        raise KeyFormatError("a fingerprint is 40 hexadecimal digits") from None
    if len(fp) != FINGERPRINT_BYTES:
        raise KeyFormatError("a fingerprint is 40 hexadecimal digits")
    return fp


def safety_number(a: bytes, b: bytes) -> str:
    """A short number two parties compare to confirm each other's keys.

    Symmetric: the same for (a, b) and (b, a). Built from SHA-256 over both raw
    public keys in sorted order under its own domain label; each 5-byte slice
    gives 5 decimal digits (the modulo bias, 2**40 mod 10**5, is negligible).
    """
    first, second = sorted((bytes(a), bytes(b)))
    digest = hashlib.sha256(domain_label("safety-number") + b"\x00" + first + second).digest()
    groups = []
    for i in range(SAFETY_NUMBER_GROUPS):
        chunk = int.from_bytes(digest[5 * i:5 * i + 5], "big") % 100_000
        groups.append(f"{chunk:05d}")
    return " ".join(groups)
