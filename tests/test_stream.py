"""Attachment streams (keys/stream.py): vectors, round trips, tampering, memory."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import stream
from keys.encoding import b64d
from keys.errors import DecryptionError, KeyFormatError, StreamError

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "stream" / "stream.json").read_text())["cases"]
KEY = bytes(range(32))
SALT = bytes(16)
SMALL = 64
H = stream.HEADER_BYTES
CT = SMALL + stream.TAG_BYTES


def pattern(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


def encrypt(plaintext: bytes, chunk_size: int = SMALL, key: bytes = KEY, salt: bytes = SALT) -> bytes:
    enc = stream.Encryptor._from_parts(key, salt, chunk_size)
    return enc.push(plaintext) + enc.finish()


def decrypt(ciphertext: bytes, key: bytes = KEY, expected_sha256: bytes | None = None) -> bytes:
    out = io.BytesIO()
    size = stream.decrypt_stream(key, io.BytesIO(ciphertext), out, expected_sha256)
    assert size == len(out.getvalue())
    return out.getvalue()


def reason_of(ciphertext: bytes, key: bytes = KEY, expected_sha256: bytes | None = None) -> str:
    with pytest.raises(StreamError) as info:
        decrypt(ciphertext, key, expected_sha256)
    return info.value.reason


def feed_bytewise(ciphertext: bytes, key: bytes = KEY, expected_sha256: bytes | None = None):
    """Feed one byte at a time; return (plaintext released, reason or None)."""
    dec = stream.Decryptor(key, expected_sha256=expected_sha256)
    released = bytearray()
    try:
        for i in range(len(ciphertext)):
            released += dec.feed(ciphertext[i:i + 1])
        released += dec.finish()
    except StreamError as exc:
        return bytes(released), exc.reason
    return bytes(released), None


# --- vectors ---------------------------------------------------------------------

def _plaintext(case: dict) -> bytes:
    if "plaintext" in case:
        return b64d(case["plaintext"])
    gen = case["plaintext_generator"]
    assert gen["kind"] == "index-mod-251"
    return pattern(gen["length"])


@pytest.mark.parametrize("case", [c for c in VECTORS if c["expect"] == "success"],
                         ids=lambda c: c["description"])
def test_vector_success(case):
    key, plaintext, size = b64d(case["key"]), _plaintext(case), case["chunk_size"]
    enc = stream.Encryptor._from_parts(key, b64d(case["salt"]), size)
    ct = enc.push(plaintext) + enc.finish()
    if "ciphertext" in case:
        assert ct == b64d(case["ciphertext"])
    digest = hashlib.sha256(ct).digest()
    assert digest == b64d(case["ciphertext_sha256"])
    assert enc.result == stream.StreamResult(len(plaintext), len(ct), digest)
    assert len(ct) == case["ciphertext_size"] == stream.ciphertext_size(len(plaintext), size)
    assert decrypt(ct, key, digest) == plaintext


@pytest.mark.parametrize("case", [c for c in VECTORS if c["expect"] != "success"],
                         ids=lambda c: c["description"])
def test_vector_failure(case):
    key, ct = b64d(case["key"]), b64d(case["ciphertext"])
    expected = b64d(case["expected_sha256"]) if "expected_sha256" in case else None
    assert reason_of(ct, key, expected) == case["expect"]
    # The verdict does not depend on how the bytes arrive.
    assert feed_bytewise(ct, key, expected)[1] == case["expect"]


def test_vectors_are_current():
    # Loaded under its own name: every vector folder has a generate.py.
    path = ROOT / "tests" / "vectors" / "stream" / "generate.py"
    spec = importlib.util.spec_from_file_location("stream_vectors_generate", path)
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.render() == (ROOT / "tests" / "vectors" / "stream" / "stream.json").read_text()


def test_vectors_cover_every_reason():
    reasons = {c["expect"] for c in VECTORS}
    assert reasons == {"success", "truncated", "extended", "bad-chunk", "bad-header", "hash-mismatch"}


# --- round trips -------------------------------------------------------------------

def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=60, deadline=None)
@given(chunk_size=st.sampled_from([64, 128, stream.DEFAULT_CHUNK_SIZE]),
       chunks=st.integers(0, 4), delta=st.sampled_from([-1, 0, 1, 7]),
       push_cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
       feed_cuts=st.lists(st.integers(0, 1 << 20), max_size=6))
def test_round_trip_at_chunk_boundaries(chunk_size, chunks, delta, push_cuts, feed_cuts):
    plaintext = pattern(max(0, chunks * chunk_size + delta))
    whole = encrypt(plaintext, chunk_size)
    assert len(whole) == stream.ciphertext_size(len(plaintext), chunk_size)

    # Same salt: the ciphertext does not depend on how the plaintext was pushed.
    enc = stream.Encryptor._from_parts(KEY, SALT, chunk_size)
    pieces = b"".join(enc.push(p) for p in _split(plaintext, push_cuts)) + enc.finish()
    assert pieces == whole

    dec = stream.Decryptor(KEY, expected_sha256=hashlib.sha256(whole).digest())
    out = b"".join(dec.feed(p) for p in _split(whole, feed_cuts)) + dec.finish()
    assert out == plaintext and dec.plaintext_size == len(plaintext)


def test_public_api_round_trip_with_random_key_and_salt():
    key = stream.generate_key()
    assert len(key) == stream.KEY_BYTES and key != stream.generate_key()
    plaintext = pattern(3 * stream.DEFAULT_CHUNK_SIZE + 5)
    first, second = io.BytesIO(), io.BytesIO()
    result = stream.encrypt_stream(key, io.BytesIO(plaintext), first)
    stream.encrypt_stream(key, io.BytesIO(plaintext), second)
    ct = first.getvalue()
    assert ct != second.getvalue()  # fresh salt: same key and file, unrelated streams
    assert result == stream.StreamResult(len(plaintext), len(ct), hashlib.sha256(ct).digest())
    out = io.BytesIO()
    assert stream.decrypt_stream(key, io.BytesIO(ct), out, result.ciphertext_sha256) == len(plaintext)
    assert out.getvalue() == plaintext


def test_empty_file_still_has_a_last_chunk():
    ct = encrypt(b"")
    assert len(ct) == H + stream.TAG_BYTES == stream.ciphertext_size(0)
    assert decrypt(ct) == b""
    assert reason_of(ct[:H]) == "truncated"


# --- tampering ----------------------------------------------------------------------

def test_every_single_bit_flip_is_rejected():
    ct = encrypt(pattern(2 * SMALL + 22))  # header + two full chunks + a partial last one
    for index in range(len(ct)):
        for bit in range(8):
            tampered = bytearray(ct)
            tampered[index] ^= 1 << bit
            with pytest.raises(StreamError):
                decrypt(bytes(tampered))


def test_every_truncation_is_rejected():
    ct = encrypt(pattern(2 * SMALL + 22))
    for length in range(len(ct)):
        with pytest.raises(StreamError):
            decrypt(ct[:length])


def test_any_appended_data_is_rejected():
    for plaintext in (b"", pattern(SMALL), pattern(SMALL + 1)):
        ct = encrypt(plaintext)
        for extra in (b"\x00", b"\xff", bytes(stream.TAG_BYTES), ct[H:], ct):
            with pytest.raises(StreamError):
                decrypt(ct + extra)


def test_only_the_original_chunk_order_decrypts():
    ct = encrypt(pattern(3 * SMALL + 9))
    body = [ct[H + i * CT:H + (i + 1) * CT] for i in range(4)]
    for order in itertools.permutations(range(4)):
        candidate = ct[:H] + b"".join(body[i] for i in order)
        if order == (0, 1, 2, 3):
            assert decrypt(candidate) == pattern(3 * SMALL + 9)
        else:
            assert reason_of(candidate) in {"bad-chunk", "extended"}


def test_no_plaintext_before_its_chunk_authenticates():
    plaintext = pattern(3 * SMALL + 9)
    ct = bytearray(encrypt(plaintext))
    ct[H + 2 * CT + 1] ^= 0x40  # third chunk altered
    released, reason = feed_bytewise(bytes(ct))
    assert reason == "bad-chunk"
    assert released == plaintext[:2 * SMALL]  # the two good chunks, nothing of the bad one


def test_last_chunk_is_released_only_by_finish():
    plaintext = pattern(2 * SMALL)
    ct = encrypt(plaintext)
    dec = stream.Decryptor(KEY)
    assert dec.feed(ct) == plaintext[:SMALL]  # the full last chunk could still be a middle one
    assert dec.finish() == plaintext[SMALL:]


def test_stream_cut_at_a_chunk_boundary_is_truncated():
    ct = encrypt(pattern(2 * SMALL + 1))
    assert reason_of(ct[:H + 2 * CT]) == "truncated"
    dec = stream.Decryptor(KEY)
    dec.feed(ct[:H + 2 * CT])
    with pytest.raises(StreamError) as info:
        dec.finish()
    assert info.value.reason == "truncated"


def test_hash_mismatch_is_reported_after_the_stream_authenticates():
    ct = encrypt(pattern(10))
    assert reason_of(ct, expected_sha256=hashlib.sha256(ct + b"x").digest()) == "hash-mismatch"


def test_failure_is_opaque_and_sticky():
    ct = bytearray(encrypt(pattern(SMALL + 1)))
    ct[H] ^= 1
    dec = stream.Decryptor(KEY)
    dec.feed(bytes(ct[:H + CT]))
    with pytest.raises(StreamError) as info:
        dec.feed(bytes(ct[H + CT:]))
    err = info.value
    assert isinstance(err, DecryptionError) and err.reason == "bad-chunk"
    assert str(err) == StreamError.__doc__  # the same text whatever went wrong
    for call in (lambda: dec.feed(b""), dec.finish):
        with pytest.raises(StreamError) as again:
            call()
        assert again.value.reason == "bad-chunk"


def test_wrong_key_length_and_bad_parameters():
    with pytest.raises(KeyFormatError):
        stream.Encryptor(b"short")
    with pytest.raises(KeyFormatError):
        stream.Decryptor(bytes(31))
    for size in (32, 100, 1 << 21):
        with pytest.raises(ValueError):
            stream.Encryptor(KEY, chunk_size=size)
        with pytest.raises(ValueError):
            stream.ciphertext_size(10, size)
    with pytest.raises(ValueError):
        stream.Decryptor(KEY, expected_sha256=b"abc")
    enc = stream.Encryptor(KEY)
    enc.finish()
    with pytest.raises(ValueError):
        enc.push(b"late")
    assert "Encryptor(...)" == repr(enc) and KEY.hex() not in repr(stream.Decryptor(KEY))


def test_ciphertext_size_formula():
    c = stream.DEFAULT_CHUNK_SIZE
    t = stream.TAG_BYTES
    assert stream.ciphertext_size(0) == H + t
    assert stream.ciphertext_size(1) == H + 1 + t
    assert stream.ciphertext_size(c) == H + c + t
    assert stream.ciphertext_size(c + 1) == H + c + 1 + 2 * t
    assert stream.ciphertext_size(4 * 1024**3) == H + 4 * 1024**3 + 65536 * t


# --- memory -------------------------------------------------------------------------

# Peak memory is measured as the growth of ru_maxrss in a fresh subprocess, not
# with tracemalloc: tracemalloc sees only allocations made through Python's
# allocator, while the AEAD and hash buffers of OpenSSL/Rust are allocated in C.
# ru_maxrss counts every page the process touched, so it is the honest figure.
_MEMORY_SCRIPT = textwrap.dedent("""
    import hashlib, json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from keys import stream

    TOTAL = 256 * 1024 * 1024
    BLOCK = bytes(range(256)) * 256

    class Pattern:
        # Produces TOTAL bytes on demand; holds only one 64 KiB block.
        def __init__(self, total):
            self.left = total
        def read(self, n=-1):
            n = min(self.left, len(BLOCK) if n is None or n < 0 else n, len(BLOCK))
            self.left -= n
            return BLOCK[:n]

    class Sink:
        # Hashes and discards.
        def __init__(self):
            self.hash, self.size = hashlib.sha256(), 0
        def write(self, data):
            self.hash.update(data)
            self.size += len(data)
            return len(data)

    class Encrypting:
        # Ciphertext of a Pattern, produced as it is read.
        def __init__(self, key, total):
            self.enc, self.src, self.pending, self.done = stream.Encryptor(key), Pattern(total), b"", False
        def read(self, n):
            while len(self.pending) < n and not self.done:
                block = self.src.read(65536)
                self.pending += self.enc.push(block) if block else self.enc.finish()
                self.done = not block
            out, self.pending = self.pending[:n], self.pending[n:]
            return out

    def peak_kib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    key = stream.generate_key()
    stream.decrypt_stream(key, Encrypting(key, 1 << 20), Sink())  # warm up allocator and imports

    before = peak_kib()
    sink = Sink()
    result = stream.encrypt_stream(key, Pattern(TOTAL), sink)
    encrypt_growth = peak_kib() - before
    assert result.ciphertext_size == sink.size == stream.ciphertext_size(TOTAL)
    assert result.ciphertext_sha256 == sink.hash.digest()

    before = peak_kib()
    sink = Sink()
    size = stream.decrypt_stream(key, Encrypting(key, TOTAL), sink)
    decrypt_growth = peak_kib() - before
    expected = hashlib.sha256()
    src = Pattern(TOTAL)
    while block := src.read(65536):
        expected.update(block)
    assert size == sink.size == TOTAL and sink.hash.digest() == expected.digest()
    print(json.dumps({"encrypt_kib": encrypt_growth, "decrypt_kib": decrypt_growth}))
""")


@pytest.mark.slow
def test_memory_stays_flat_for_256_mib():
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(ROOT)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    growth = json.loads(done.stdout)
    assert growth["encrypt_kib"] < 32 * 1024, growth
    assert growth["decrypt_kib"] < 32 * 1024, growth


def test_resumed_upload_regenerates_identical_ciphertext():
    from keys.stream import Encryptor, generate_key
    key, data = generate_key(), os.urandom(200_000)
    first = Encryptor(key)
    original = first.push(data) + first.finish()
    again = Encryptor.for_resumed_upload(key, first.salt)
    assert again.push(data) + again.finish() == original
    assert Encryptor(key).salt != first.salt
