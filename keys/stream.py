"""Attachment streams: files of any size encrypted in chunks, with flat memory.

Construction: STREAM (Hoang, Reyhanitabar, Rogaway, Vizar 2015) as age uses
it, over ChaCha20-Poly1305 (RFC 8439) from pyca/cryptography. Why this and not
libsodium secretstream: docs/decisions.md. Exact byte format:
docs/protocol.md §6. In short::

    header  = "CMTYSTRM" || version (1 byte) || log2(chunk size) (1 byte) || salt (16 bytes)
    key'    = HKDF-SHA256(ikm=content key, salt=salt, info="comity/v1/stream", 32 bytes)
    chunk i = ChaCha20-Poly1305(key', nonce = i as 11 bytes big-endian || last flag,
                                plaintext = exactly chunk size bytes, or 0..chunk size for
                                the last chunk (0 only when it is also the first),
                                associated data = header)
    stream  = header || chunk 0 || chunk 1 || ... || last chunk

Every chunk authenticates the header, its position and whether it is last,
so a changed header, reordered, dropped, truncated or extended stream fails.
The SHA-256 of the ciphertext goes into the signed manifest: it binds the
blob to the sender, since every recipient holds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .constants import PROTOCOL_VERSION
from .encoding import domain_label
from .errors import KeyFormatError, StreamError

#: content key carried in the manifest: 256 bits, fresh per attachment
KEY_BYTES = 32
#: identifies a comity attachment stream ("comity stream"); not secret
MAGIC = b"CMTYSTRM"
#: 128-bit random salt: derived stream keys stay distinct even if a content key
#: were ever reused (birthday bound 2**64 streams), as age does with its nonce
SALT_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + 1 + SALT_BYTES
#: Poly1305 tag appended to every chunk
TAG_BYTES = 16
#: chunk sizes are powers of two from 64 bytes (tests) to 1 MiB: the upper
#: bound caps what a hostile sender can make a recipient buffer
MIN_CHUNK_EXPONENT = 6
MAX_CHUNK_EXPONENT = 20
#: 64 KiB: the fastest size measured (bench/stream.py), and age's choice
DEFAULT_CHUNK_SIZE = 64 * 1024

# Nonce = 11-byte big-endian chunk counter || 1-byte last flag (STREAM, as in
# age). Unique per chunk under one derived key: the counter only grows and
# 2**88 chunks are never reached (int.to_bytes raises OverflowError first),
# and the flag separates a last chunk from a non-last one at the same index.
_COUNTER_BYTES = 11
_NOT_LAST = b"\x00"
_LAST = b"\x01"
#: HKDF info: separates the stream key from any other use of the content key
_KDF_INFO = domain_label("stream")
#: read size of decrypt_stream before the header tells the chunk size
_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class StreamResult:
    """What the sender puts in the message manifest after encrypting a file."""

    plaintext_size: int
    ciphertext_size: int
    ciphertext_sha256: bytes


def generate_key() -> bytes:
    """A fresh random content key for one attachment."""
    return os.urandom(KEY_BYTES)


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact size of the stream that encrypts ``plaintext_size`` bytes."""
    _chunk_exponent(chunk_size)
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    chunks = max(1, -(-plaintext_size // chunk_size))  # an empty stream still has its last chunk
    return HEADER_BYTES + plaintext_size + chunks * TAG_BYTES


def _chunk_exponent(chunk_size: int) -> int:
    exponent = chunk_size.bit_length() - 1
    if chunk_size != 1 << exponent or not MIN_CHUNK_EXPONENT <= exponent <= MAX_CHUNK_EXPONENT:
        raise ValueError(f"chunk size must be a power of two from {1 << MIN_CHUNK_EXPONENT}"
                         f" to {1 << MAX_CHUNK_EXPONENT} bytes")
    return exponent


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise KeyFormatError(f"an attachment key is {KEY_BYTES} bytes")


def _stream_aead(key: bytes, salt: bytes) -> ChaCha20Poly1305:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_KDF_INFO)
    return ChaCha20Poly1305(derived.derive(bytes(key)))


def _nonce(counter: int, flag: bytes) -> bytes:
    return counter.to_bytes(_COUNTER_BYTES, "big") + flag


def _fail(reason: str) -> StreamError:
    # Opaque message for every failure; the reason is for the user's own logs.
    return StreamError(reason=reason)


class Encryptor:
    """Incremental encryption: ``push`` plaintext pieces, then ``finish``.

    Each call returns the ciphertext bytes ready so far (possibly empty), to be
    written or uploaded in order. A full chunk is held back until more data
    arrives, because only then is it known not to be the last. After
    ``finish``, ``result`` holds sizes and the SHA-256 of all bytes returned.
    """

    __slots__ = ("_aead", "_header", "_chunk", "_buf", "_counter", "_started",
                 "_hash", "_plain", "_cipher", "result")

    def __init__(self, key: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self._setup(key, os.urandom(SALT_BYTES), chunk_size)

    @classmethod
    def _from_parts(cls, key: bytes, salt: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> "Encryptor":
        """Deterministic construction for test vectors; never reuse a salt otherwise."""
        self = cls.__new__(cls)
        self._setup(key, salt, chunk_size)
        return self

    @classmethod
    def for_resumed_upload(cls, key: bytes, salt: bytes,
                           chunk_size: int = DEFAULT_CHUNK_SIZE) -> "Encryptor":
        """Re-create an interrupted upload's encryptor to regenerate its exact ciphertext.

        Only for the *same, unchanged* plaintext (the client checks size and
        modification time): the same key and salt over different plaintext
        would reuse nonces.
        """
        return cls._from_parts(key, salt, chunk_size)

    @property
    def salt(self) -> bytes:
        """This stream's random salt (kept with an upload so it can resume)."""
        return self._header[-SALT_BYTES:]

    def _setup(self, key: bytes, salt: bytes, chunk_size: int) -> None:
        exponent = _chunk_exponent(chunk_size)
        _check_key(key)
        if len(salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        self._header = MAGIC + bytes([PROTOCOL_VERSION, exponent]) + bytes(salt)
        self._aead = _stream_aead(key, salt)
        self._chunk = chunk_size
        self._buf = bytearray()
        self._counter = 0
        self._started = False
        self._hash = hashlib.sha256()
        self._plain = 0
        self._cipher = 0
        self.result: StreamResult | None = None

    def push(self, data: bytes) -> bytes:
        """Add plaintext; return the ciphertext that can be sent now."""
        if self.result is not None:
            raise ValueError("push() after finish()")
        out = self._start()
        before = len(self._buf)
        self._buf += data
        self._plain += len(self._buf) - before
        size = self._chunk
        ready = (len(self._buf) - 1) // size if self._buf else 0  # keep >= 1 byte back
        if ready:
            with memoryview(self._buf) as view:
                for i in range(ready):
                    out.append(self._seal(view[i * size:(i + 1) * size], _NOT_LAST))
            del self._buf[:ready * size]
        return self._emit(out)

    def finish(self) -> bytes:
        """Seal the last chunk (empty only if no plaintext at all) and return it."""
        if self.result is not None:
            raise ValueError("finish() called twice")
        out = self._start()
        out.append(self._seal(bytes(self._buf), _LAST))
        self._buf = bytearray()
        data = self._emit(out)
        self.result = StreamResult(self._plain, self._cipher, self._hash.digest())
        return data

    def _start(self) -> list:
        first, self._started = not self._started, True
        return [self._header] if first else []

    def _seal(self, piece, flag: bytes) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._counter, flag), piece, self._header)
        self._counter += 1
        return sealed

    def _emit(self, parts: list) -> bytes:
        data = b"".join(parts)
        self._hash.update(data)
        self._cipher += len(data)
        return data

    def __repr__(self) -> str:
        return "Encryptor(...)"


class Decryptor:
    """Incremental decryption: ``feed`` ciphertext pieces, then ``finish``.

    ``feed`` returns the plaintext of every chunk that has authenticated so far
    (possibly empty); ``finish`` checks the stream ended with its last chunk
    (and, if given, the ciphertext SHA-256) and returns the last plaintext.
    Plaintext returned before ``finish`` succeeded is authentic under the key
    but not yet known to be the whole file: keep it provisional until then.
    Any failure raises StreamError and every later call raises it again.
    """

    __slots__ = ("_key", "_expected", "_aead", "_header", "_ct_chunk", "_buf",
                 "_counter", "_hash", "_plain", "_failed", "_done")

    def __init__(self, key: bytes, *, expected_sha256: bytes | None = None):
        _check_key(key)
        if expected_sha256 is not None and len(expected_sha256) != hashlib.sha256().digest_size:
            raise ValueError("expected_sha256 must be a 32-byte SHA-256 digest")
        self._key: bytes | None = bytes(key)  # dropped once the stream key is derived
        self._expected = expected_sha256
        self._aead: ChaCha20Poly1305 | None = None
        self._header = b""
        self._ct_chunk = 0
        self._buf = bytearray()
        self._counter = 0
        self._hash = hashlib.sha256()
        self._plain = 0
        self._failed: str | None = None
        self._done = False

    plaintext_size = property(lambda self: self._plain, doc="Plaintext bytes released so far.")

    def feed(self, data: bytes) -> bytes:
        """Add ciphertext; return the plaintext of the chunks that authenticated."""
        self._usable()
        self._hash.update(data)
        self._buf += data
        try:
            return self._drain()
        except StreamError as exc:
            self._failed = exc.reason
            raise

    def finish(self) -> bytes:
        """End of input: return the last chunk's plaintext, or raise StreamError."""
        self._usable()
        try:
            plain = self._last()
        except StreamError as exc:
            self._failed = exc.reason
            raise
        self._done = True
        return plain

    def _usable(self) -> None:
        if self._failed is not None:
            raise _fail(self._failed)
        if self._done:
            raise ValueError("the stream is already finished")

    def _read_header(self) -> None:
        header = bytes(self._buf[:HEADER_BYTES])
        exponent = header[len(MAGIC) + 1]
        if (header[:len(MAGIC)] != MAGIC or header[len(MAGIC)] != PROTOCOL_VERSION
                or not MIN_CHUNK_EXPONENT <= exponent <= MAX_CHUNK_EXPONENT):
            raise _fail("bad-header")
        self._header = header
        self._ct_chunk = (1 << exponent) + TAG_BYTES
        self._aead = _stream_aead(self._key, header[-SALT_BYTES:])
        self._key = None
        del self._buf[:HEADER_BYTES]

    def _drain(self) -> bytes:
        if self._aead is None:
            if len(self._buf) < HEADER_BYTES:
                return b""
            self._read_header()
        full, out, offset = self._ct_chunk, [], 0
        # A full-size chunk is opened only once a byte after it has arrived:
        # until then it could be the last chunk.
        with memoryview(self._buf) as view:
            while len(self._buf) - offset > full:
                out.append(self._open_middle(view[offset:offset + full]))
                offset += full
        del self._buf[:offset]
        return b"".join(out)

    def _open_middle(self, piece) -> bytes:
        try:
            plain = self._aead.decrypt(_nonce(self._counter, _NOT_LAST), piece, self._header)
        except InvalidTag:
            # Diagnose only (both branches fail): a valid last chunk here means
            # someone appended data after the end of the stream.
            raise _fail("extended" if self._opens(piece, _LAST) else "bad-chunk") from None
        self._counter += 1
        self._plain += len(plain)
        return plain

    def _last(self) -> bytes:
        if self._aead is None or len(self._buf) < TAG_BYTES:
            raise _fail("truncated")
        piece = bytes(self._buf)
        try:
            plain = self._aead.decrypt(_nonce(self._counter, _LAST), piece, self._header)
        except InvalidTag:
            # A complete middle chunk at the end: the stream stopped early.
            cut = len(piece) == self._ct_chunk and self._opens(piece, _NOT_LAST)
            raise _fail("truncated" if cut else "bad-chunk") from None
        if not plain and self._counter:
            raise _fail("bad-chunk")  # an empty last chunk encodes only the empty file
        if self._expected is not None and not hmac.compare_digest(self._hash.digest(), self._expected):
            raise _fail("hash-mismatch")
        self._buf = bytearray()
        self._counter += 1
        self._plain += len(plain)
        return plain

    def _opens(self, piece, flag: bytes) -> bool:
        try:
            self._aead.decrypt(_nonce(self._counter, flag), piece, self._header)
        except InvalidTag:
            return False
        return True

    def __repr__(self) -> str:
        return "Decryptor(...)"


def encrypt_stream(key: bytes, src, dst, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> StreamResult:
    """Encrypt readable binary ``src`` into writable ``dst``, one chunk in memory at a time."""
    enc = Encryptor(key, chunk_size=chunk_size)
    while block := src.read(chunk_size):
        dst.write(enc.push(block))
    dst.write(enc.finish())
    return enc.result


def decrypt_stream(key: bytes, src, dst, expected_sha256: bytes | None = None) -> int:
    """Decrypt ``src`` into ``dst``; return the plaintext size.

    On StreamError, whatever was already written to ``dst`` must be discarded:
    write to a temporary file and keep it only if this returns.
    """
    dec = Decryptor(key, expected_sha256=expected_sha256)
    while block := src.read(dec._ct_chunk or _READ_BYTES):
        plain = dec.feed(block)
        if plain:
            dst.write(plain)
    plain = dec.finish()
    if plain:
        dst.write(plain)
    return dec.plaintext_size
