"""The encrypted keystore: the member's private keys, sealed under a passphrase.

File ``keystore.json`` in ``COMITY_HOME`` (mode 0600)::

    {"v": 1, "kdf": {"alg": "argon2id13", "salt": b64, "ops": int, "mem": int},
     "nonce": b64, "ciphertext": b64}

The key is argon2id(passphrase, salt) from libsodium; the ciphertext is
XChaCha20-Poly1305 of canonical JSON holding the handle, the identity seed,
every encryption private key still kept (by version), and ``local_key``, the
key that encrypts the message rows of the local database. A wrong passphrase
and a tampered file are the same error: the AEAD tag does not verify.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from keys.encoding import b64d, b64e, canonical, parse
from keys.errors import KeysError
from keys.hpke import EncryptionKey
from keys.identity import IdentityKey

from .errors import ClientError, WeakPassphrase, WrongPassphrase
from .home import write_private

KEYSTORE_FILE = "keystore.json"
SALT_BYTES = argon2id.SALTBYTES                  # 16
NONCE_BYTES = 24                                 # XChaCha20: random nonces are safe at 192 bits
KEY_BYTES = 32
#: argon2id cost: libsodium's "moderate" passes with 128 MiB, about 0.45 s here;
#: a stolen keystore costs an attacker that much per passphrase guess
OPS = argon2id.OPSLIMIT_MODERATE
MEM = 128 * 1024 * 1024
#: refuse to open a keystore whose recorded cost is below this (a downgraded file)
MIN_OPS, MIN_MEM = argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE
#: test-only knob: makes argon2id nearly free so end-to-end tests run fast
ENV_FAST_KDF = "COMITY_INSECURE_FAST_KDF"
#: the shortest passphrase a keystore is sealed under (one that already exists still opens
#: with whatever it was made with)
MIN_PASSPHRASE_CHARS = 8
#: associated data: binds the ciphertext to this file format version
AAD = b"comity/v1/keystore"


def _fast_kdf() -> bool:
    return os.environ.get(ENV_FAST_KDF) == "1"


def check_new_passphrase(passphrase: str) -> str:
    """Refuse a passphrase too short to seal a new keystore under."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise WeakPassphrase(minimum=MIN_PASSPHRASE_CHARS)
    return passphrase


@dataclass
class KeptKey:
    version: int
    key: EncryptionKey
    created: int
    not_after: int
    retired_at: int | None = None     # when a newer key replaced it; destroyed after the grace

    def __repr__(self) -> str:
        return f"KeptKey(version={self.version})"


@dataclass
class Secrets:
    handle: str
    identity: IdentityKey
    local_key: bytes
    encryption_keys: list[KeptKey] = field(default_factory=list)
    #: a new identity key waiting for an administrator's countersignature
    pending_identity: IdentityKey | None = None

    def __repr__(self) -> str:
        return f"Secrets({self.handle!r}, <secret>)"

    def current(self) -> KeptKey:
        return max(self.encryption_keys, key=lambda k: k.version)

    def decryption_keys(self) -> dict[int, EncryptionKey]:
        return {k.version: k.key for k in self.encryption_keys}

    def to_record(self) -> dict:
        return {
            "handle": self.handle,
            "identity_seed": b64e(self.identity.seed()),
            "local_key": b64e(self.local_key),
            "encryption_keys": [
                {"version": k.version, "private": b64e(k.key.private_bytes()), "created": k.created,
                 "not_after": k.not_after, "retired_at": k.retired_at}
                for k in self.encryption_keys],
            "pending_identity_seed": b64e(self.pending_identity.seed()) if self.pending_identity else None,
        }

    @classmethod
    def from_record(cls, record: dict) -> "Secrets":
        return cls(
            handle=record["handle"],
            identity=IdentityKey.from_seed(b64d(record["identity_seed"])),
            local_key=b64d(record["local_key"], length=KEY_BYTES),
            encryption_keys=[KeptKey(k["version"], EncryptionKey(b64d(k["private"])), k["created"],
                                     k["not_after"], k.get("retired_at"))
                             for k in record["encryption_keys"]],
            pending_identity=(IdentityKey.from_seed(b64d(record["pending_identity_seed"]))
                              if record.get("pending_identity_seed") else None),
        )


class Keystore:
    def __init__(self, home: Path):
        self.path = home / KEYSTORE_FILE
        self._unlocked: tuple | None = None     # (salt, ops, mem, derived key) once unlocked

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, secrets: Secrets, passphrase: str) -> None:
        check_new_passphrase(passphrase)
        ops, mem = (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN) if _fast_kdf() else (OPS, MEM)
        salt = os.urandom(SALT_BYTES)
        key = argon2id.kdf(KEY_BYTES, passphrase.encode("utf-8"), salt, opslimit=ops, memlimit=mem)
        self._unlocked = (salt, ops, mem, key)
        self._write(secrets)

    def resave(self, secrets: Secrets) -> None:
        """Seal changed secrets (a new or destroyed key) under the passphrase used to unlock."""
        if getattr(self, "_unlocked", None) is None:
            raise ClientError("the keystore is locked")
        self._write(secrets)

    def _write(self, secrets: Secrets) -> None:
        salt, ops, mem, key = self._unlocked
        nonce = os.urandom(NONCE_BYTES)       # fresh per write: the key is reused across writes
        ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            canonical(secrets.to_record()), AAD, nonce, key)
        document = {"v": 1, "kdf": {"alg": "argon2id13", "salt": b64e(salt), "ops": ops, "mem": mem},
                    "nonce": b64e(nonce), "ciphertext": b64e(ciphertext)}
        write_private(self.path, canonical(document))

    def load(self, passphrase: str) -> Secrets:
        try:
            document = parse(self.path.read_bytes())
            kdf = document["kdf"]
            ops, mem = int(kdf["ops"]), int(kdf["mem"])
            salt, nonce = b64d(kdf["salt"], length=SALT_BYTES), b64d(document["nonce"], length=NONCE_BYTES)
            ciphertext = b64d(document["ciphertext"])
        except FileNotFoundError:
            raise ClientError(f"no keystore at {self.path}") from None
        except (OSError, KeysError, KeyError, TypeError, ValueError):
            raise ClientError(f"the keystore {self.path} is damaged") from None
        if (ops < MIN_OPS or mem < MIN_MEM) and not _fast_kdf():
            raise ClientError(f"the keystore {self.path} uses a weak key derivation: refusing it",
                              hint=f"it was made with the test-only {ENV_FAST_KDF}=1")
        key = argon2id.kdf(KEY_BYTES, passphrase.encode("utf-8"), salt, opslimit=ops, memlimit=mem)
        try:
            plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, AAD, nonce, key)
        except nacl.exceptions.CryptoError:
            raise WrongPassphrase() from None
        self._unlocked = (salt, ops, mem, key)
        return Secrets.from_record(parse(plaintext))

    def __repr__(self) -> str:
        return f"Keystore({str(self.path)!r})"
