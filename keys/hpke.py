"""Hybrid post-quantum encryption keys (HPKE, RFC 9180) and their signed records.

Suite: KEM ``MLKEM768_X25519`` (ML-KEM-768 and X25519 combined, so a message
stays confidential unless *both* are broken: harvest-now-decrypt-later is in
our threat model), KDF HKDF-SHA256, AEAD ChaCha20-Poly1305, all from
pyca/cryptography. We call its single-shot base-mode API and nothing lower.

Wire form of a public key: ML-KEM-768 public key (1184 bytes) followed by the
X25519 public key (32 bytes). A private key is kept as its seeds: the 64-byte
ML-KEM seed (FIPS 203 d||z) followed by the 32-byte X25519 scalar.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke as _hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from .encoding import b64d, b64e, require_fields
from .errors import EncodingError, DecryptionError, KeyFormatError
from .identity import IdentityKey, IdentityPublicKey

KEM_NAME = "MLKEM768_X25519"
MLKEM_PUBLIC_BYTES = 1184
X25519_BYTES = 32
PUBLIC_KEY_BYTES = MLKEM_PUBLIC_BYTES + X25519_BYTES
MLKEM_SEED_BYTES = 64
PRIVATE_KEY_BYTES = MLKEM_SEED_BYTES + X25519_BYTES

#: purpose under which an identity key signs an encryption key record
KEY_RECORD_PURPOSE = "encryption-key"

_SUITE = _hpke.Suite(_hpke.KEM.MLKEM768_X25519, _hpke.KDF.HKDF_SHA256, _hpke.AEAD.CHACHA20_POLY1305)


class EncryptionPublicKey:
    __slots__ = ("raw", "_key")

    def __init__(self, raw: bytes):
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != PUBLIC_KEY_BYTES:
            raise KeyFormatError(f"an encryption public key is {PUBLIC_KEY_BYTES} bytes")
        self.raw = bytes(raw)
        try:
            self._key = _hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:MLKEM_PUBLIC_BYTES]),
                x25519.X25519PublicKey.from_public_bytes(self.raw[MLKEM_PUBLIC_BYTES:]),
            )
        except ValueError:
            raise KeyFormatError("not a valid MLKEM768_X25519 public key") from None

    @classmethod
    def from_b64(cls, text: str) -> "EncryptionPublicKey":
        try:
            raw = b64d(text, length=PUBLIC_KEY_BYTES, what="encryption key")
        except EncodingError as exc:
            raise KeyFormatError(exc.message) from None
        return cls(raw)

    def b64(self) -> str:
        return b64e(self.raw)

    def seal(self, plaintext: bytes, info: bytes) -> bytes:
        """HPKE base-mode single-shot encryption: returns ``enc || ciphertext``.

        A fresh ephemeral key per call, so no nonce is ours to manage.
        """
        return _SUITE.encrypt(plaintext, self._key, info=info)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncryptionPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return "EncryptionPublicKey(...)"


class EncryptionKey:
    """An HPKE private key. Never printed; ``private_bytes`` is for the keystore only."""

    __slots__ = ("_seed", "_key", "public")

    def __init__(self, seed: bytes):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != PRIVATE_KEY_BYTES:
            raise KeyFormatError(f"an encryption private key is {PRIVATE_KEY_BYTES} bytes")
        self._seed = bytes(seed)
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(self._seed[:MLKEM_SEED_BYTES])
        x = x25519.X25519PrivateKey.from_private_bytes(self._seed[MLKEM_SEED_BYTES:])
        self._key = _hpke.MLKEM768X25519PrivateKey(m, x)
        self.public = EncryptionPublicKey(
            m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> "EncryptionKey":
        return cls(os.urandom(PRIVATE_KEY_BYTES))

    def private_bytes(self) -> bytes:
        return self._seed

    def open(self, sealed: bytes, info: bytes) -> bytes:
        """Inverse of ``EncryptionPublicKey.seal``; any failure is one opaque error."""
        try:
            return _SUITE.decrypt(bytes(sealed), self._key, info=info)
        except (InvalidTag, ValueError, TypeError):
            raise DecryptionError(reason="decryption-failed") from None

    def __repr__(self) -> str:
        return "EncryptionKey(<secret>)"


# -- signed encryption key records ------------------------------------------

KEY_RECORD_FIELDS = {"kem", "public_key", "version", "created", "not_after"}


def make_key_record(identity: IdentityKey, public: EncryptionPublicKey, *,
                    version: int, created: int, not_after: int) -> dict[str, Any]:
    """An encryption key record signed by ``identity``.

    ``{"kem", "public_key", "version", "created", "not_after", "sig"}``; the
    signature covers every field but ``sig`` under purpose ``encryption-key``.
    """
    record = {
        "kem": KEM_NAME,
        "public_key": public.b64(),
        "version": version,
        "created": created,
        "not_after": not_after,
    }
    check_key_record_shape(record, signed=False)
    return {**record, "sig": identity.sign_b64(KEY_RECORD_PURPOSE, record)}


def check_key_record_shape(record: Any, *, signed: bool = True) -> None:
    required = KEY_RECORD_FIELDS | ({"sig"} if signed else set())
    require_fields(record, required, what="encryption key record", error=KeyFormatError)
    if signed and not isinstance(record["sig"], str):
        raise KeyFormatError("encryption key record: sig must be base64url text")
    if record["kem"] != KEM_NAME:
        raise KeyFormatError(f"unsupported KEM {record['kem']!r}; only {KEM_NAME}")
    for name in ("version", "created", "not_after"):
        value = record[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise KeyFormatError(f"encryption key record: {name} must be a non-negative integer")
    if record["version"] < 1:
        raise KeyFormatError("encryption key record: version starts at 1")
    if record["not_after"] <= record["created"]:
        raise KeyFormatError("encryption key record: not_after must be after created")


def verify_key_record(record: Any, identity: IdentityPublicKey) -> EncryptionPublicKey:
    """Check shape and signature; return the public key it vouches for."""
    check_key_record_shape(record)
    unsigned = {k: v for k, v in record.items() if k != "sig"}
    identity.verify(KEY_RECORD_PURPOSE, unsigned, record["sig"])
    return EncryptionPublicKey.from_b64(record["public_key"])
