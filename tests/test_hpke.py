"""HPKE encryption keys and signed key records (keys.hpke)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from keys.encoding import b64e
from keys.errors import DecryptionError, KeyFormatError, SignatureError
from keys.hpke import (PRIVATE_KEY_BYTES, PUBLIC_KEY_BYTES, EncryptionKey, EncryptionPublicKey,
                       make_key_record, verify_key_record)
from keys.identity import IdentityKey

from .conftest import load_vectors


def test_rfc9180_a2_base_mode_through_the_library():
    """RFC 9180 A.2 through pyca/cryptography's single-shot HPKE, which keys uses.

    The library's single-shot API takes no AAD, and the RFC's ciphertexts all use
    AAD "Count-<n>". So: (1) check that the RFC's key and base_nonce, fed to
    ChaCha20-Poly1305 with the RFC's AAD, give the RFC's ciphertext (the vector is
    what we think it is); (2) seal the RFC plaintext under that key and nonce with
    empty AAD and have the library's HPKE decrypt it from skRm, enc and info. The
    library can only succeed if its base-mode key schedule derives exactly the
    RFC's key and base_nonce.
    """
    v = load_vectors("hpke/rfc9180_a2.json")
    h = bytes.fromhex
    sk_r = x25519.X25519PrivateKey.from_private_bytes(h(v["skRm"]))
    assert sk_r.public_key().public_bytes_raw() == h(v["pkRm"])
    assert x25519.X25519PrivateKey.from_private_bytes(h(v["skEm"])).public_key().public_bytes_raw() == h(v["enc"])
    aead = ChaCha20Poly1305(h(v["key"]))
    assert aead.encrypt(h(v["base_nonce"]), h(v["pt"]), h(v["aad_seq0"])) == h(v["ct_seq0"])

    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    ct_no_aad = aead.encrypt(h(v["base_nonce"]), h(v["pt"]), b"")
    assert suite.decrypt(h(v["enc"]) + ct_no_aad, sk_r, info=h(v["info"])) == h(v["pt"])
    with pytest.raises(Exception):
        suite.decrypt(h(v["enc"]) + ct_no_aad, sk_r, info=h(v["info"]) + b"!")


def test_seal_open_round_trip_and_sizes():
    key = EncryptionKey.generate()
    sealed = key.public.seal(b"k" * 32, b"info")
    assert len(key.public.raw) == PUBLIC_KEY_BYTES
    assert key.open(sealed, b"info") == b"k" * 32
    # Fresh ephemeral per call: the same plaintext never seals the same way twice.
    assert key.public.seal(b"k" * 32, b"info") != sealed


def test_private_key_round_trip_is_deterministic():
    seed = bytes(range(PRIVATE_KEY_BYTES))
    assert EncryptionKey(seed).public == EncryptionKey(seed).public
    assert EncryptionKey(seed).private_bytes() == seed


@pytest.mark.parametrize("tamper", ["info", "flip", "truncate", "other-key"])
def test_open_refuses(tamper):
    key = EncryptionKey.generate()
    sealed = bytearray(key.public.seal(b"secret", b"info"))
    info, opener = b"info", key
    if tamper == "info":
        info = b"other"
    elif tamper == "flip":
        sealed[-1] ^= 1
    elif tamper == "truncate":
        sealed = sealed[:100]
    else:
        opener = EncryptionKey.generate()
    with pytest.raises(DecryptionError) as err:
        opener.open(bytes(sealed), info)
    assert err.value.reason == "decryption-failed"


def test_key_record_signed_and_checked():
    identity = IdentityKey.generate()
    key = EncryptionKey.generate()
    record = make_key_record(identity, key.public, version=1, created=100, not_after=200)
    assert verify_key_record(record, identity.public) == key.public
    with pytest.raises(SignatureError):
        verify_key_record({**record, "not_after": 10**9}, identity.public)
    with pytest.raises(SignatureError):
        verify_key_record(record, IdentityKey.generate().public)
    with pytest.raises(KeyFormatError, match="unknown field"):
        verify_key_record({**record, "extra": 1}, identity.public)
    with pytest.raises(KeyFormatError, match="unsupported KEM"):
        verify_key_record({**record, "kem": "X25519"}, identity.public)
    with pytest.raises(KeyFormatError, match="not_after"):
        make_key_record(identity, key.public, version=1, created=200, not_after=200)


def test_bad_public_key_bytes():
    with pytest.raises(KeyFormatError):
        EncryptionPublicKey(b"\x00" * 10)
    with pytest.raises(KeyFormatError):
        EncryptionPublicKey.from_b64(b64e(b"\x00" * 31))


def test_private_key_not_in_repr():
    key = EncryptionKey.generate()
    assert key.private_bytes().hex() not in repr(key)
    assert "secret" in repr(key)
