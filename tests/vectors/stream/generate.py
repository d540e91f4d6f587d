"""Write tests/vectors/stream/stream.json: attachment-stream test vectors.

    python tests/vectors/stream/generate.py

Origin: produced by keys/stream.py itself through its deterministic path
(Encryptor._from_parts with a fixed key and salt), then altered by hand-written
mutations for the failure cases. They pin the byte format of
docs/protocol.md §6 so that a change to it cannot pass unnoticed, and give
another implementation something to check against. Rerunning this script
produces a byte-identical file.

Case fields (bytes as base64url without padding):
  description       what the case shows
  key               32-byte content key
  salt, chunk_size  encryption parameters (success cases: re-encrypt and compare)
  plaintext         the plaintext, or
  plaintext_generator  {"kind": "index-mod-251", "length": N}: byte i is i % 251
                    (large cases, to keep the file small)
  ciphertext        the stream; large cases give only ciphertext_sha256/_size
  ciphertext_sha256, ciphertext_size   what goes into the manifest
  expected_sha256   (optional) hash the decryptor is told to expect
  expect            "success" or the StreamError reason decryption must give
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from keys import stream  # noqa: E402
from keys.encoding import b64e  # noqa: E402

OUT = Path(__file__).with_name("stream.json")

KEY = hashlib.sha256(b"comity stream test vector key").digest()
OTHER_KEY = hashlib.sha256(b"comity stream test vector other key").digest()
SALT = bytes(range(0xA0, 0xA0 + stream.SALT_BYTES))
SMALL = 64  # smallest allowed chunk size: many chunks in few bytes
H = stream.HEADER_BYTES
CT = SMALL + stream.TAG_BYTES  # ciphertext size of a full small chunk


def generated(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


def encrypt(plaintext: bytes, chunk_size: int = SMALL, key: bytes = KEY) -> bytes:
    enc = stream.Encryptor._from_parts(key, SALT, chunk_size)
    return enc.push(plaintext) + enc.finish()


def success(description: str, plaintext: bytes, chunk_size: int = SMALL, *, big: bool = False) -> dict:
    ct = encrypt(plaintext, chunk_size)
    case = {"description": description, "key": b64e(KEY), "salt": b64e(SALT),
            "chunk_size": chunk_size, "ciphertext_sha256": b64e(hashlib.sha256(ct).digest()),
            "ciphertext_size": len(ct), "expect": "success"}
    if big:
        case["plaintext_generator"] = {"kind": "index-mod-251", "length": len(plaintext)}
    else:
        case["plaintext"] = b64e(plaintext)
        case["ciphertext"] = b64e(ct)
    return case


def failure(description: str, ciphertext: bytes, expect: str, *, key: bytes = KEY,
            expected_sha256: bytes | None = None) -> dict:
    case = {"description": description, "key": b64e(key), "ciphertext": b64e(ciphertext),
            "expect": expect}
    if expected_sha256 is not None:
        case["expected_sha256"] = b64e(expected_sha256)
    return case


def chunks(ct: bytes) -> list[bytes]:
    body = ct[H:]
    return [body[i:i + CT] for i in range(0, len(body), CT)]


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def empty_last_after_full() -> bytes:
    """64 bytes encoded non-canonically: a full middle chunk and an empty last chunk."""
    enc = stream.Encryptor._from_parts(KEY, SALT, SMALL)
    header = enc._header
    aead = stream._stream_aead(KEY, SALT)
    return (header + aead.encrypt(stream._nonce(0, stream._NOT_LAST), generated(SMALL), header)
            + aead.encrypt(stream._nonce(1, stream._LAST), b"", header))


def cases() -> list[dict]:
    four = encrypt(generated(200))  # chunks of 64, 64, 64, 8 bytes
    two = encrypt(generated(128))  # two full chunks, the second one last
    c4 = chunks(four)
    header = four[:H]
    return [
        success("empty plaintext: header and one empty last chunk", b""),
        success("one byte", b"\x2a"),
        success("63 bytes: one byte short of a chunk", generated(63)),
        success("exactly one chunk: the last chunk is full", generated(64)),
        success("one chunk and one byte", generated(65)),
        success("exactly two chunks", generated(128)),
        success("several chunks, last one partial", generated(200)),
        success("default 64 KiB chunk size, short text", b"mutual legal assistance request",
                stream.DEFAULT_CHUNK_SIZE),
        success("default chunk size, exactly one chunk", generated(65536),
                stream.DEFAULT_CHUNK_SIZE, big=True),
        success("default chunk size, three chunks and a partial one", generated(3 * 65536 + 1000),
                stream.DEFAULT_CHUNK_SIZE, big=True),
        failure("no data at all", b"", "truncated"),
        failure("header cut short", four[:H - 1], "truncated"),
        failure("header only, no chunk", header, "truncated"),
        failure("last chunk dropped: stream cut at a chunk boundary", header + b"".join(c4[:3]),
                "truncated"),
        failure("only the first chunk", header + c4[0], "truncated"),
        failure("stream cut inside the last chunk", four[:-3], "bad-chunk"),
        failure("stream cut inside a middle chunk", four[:H + CT + 20], "bad-chunk"),
        failure("fewer bytes left than a tag", four[:H + 2 * CT + 5], "truncated"),
        failure("chunks 0 and 1 swapped", header + c4[1] + c4[0] + c4[2] + c4[3], "bad-chunk"),
        failure("middle chunk dropped", header + c4[0] + c4[2] + c4[3], "bad-chunk"),
        failure("first chunk repeated", header + c4[0] + c4[0] + c4[1] + c4[2] + c4[3], "bad-chunk"),
        failure("one byte after a full last chunk", two + b"\x00", "extended"),
        failure("a chunk appended after a full last chunk", two + chunks(two)[0], "extended"),
        failure("a whole second stream appended", two + two, "extended"),
        failure("one byte after a partial last chunk (cannot be told from corruption)",
                four + b"\x00", "bad-chunk"),
        failure("empty last chunk after a full chunk (non-canonical)", empty_last_after_full(),
                "bad-chunk"),
        failure("bit flipped in the first chunk's ciphertext", flip(four, H + 3), "bad-chunk"),
        failure("bit flipped in a middle chunk's tag", flip(four, H + 2 * CT - 1, 7), "bad-chunk"),
        failure("bit flipped in the last chunk", flip(four, len(four) - 10, 4), "bad-chunk"),
        failure("bit flipped in the magic", flip(four, 0), "bad-header"),
        failure("unknown version 2", four[:8] + b"\x02" + four[9:], "bad-header"),
        failure("chunk size exponent 5 (below the minimum)", four[:9] + b"\x05" + four[10:],
                "bad-header"),
        failure("chunk size exponent 21 (above the maximum)", four[:9] + b"\x15" + four[10:],
                "bad-header"),
        failure("chunk size changed to another allowed one (128)", four[:9] + b"\x07" + four[10:],
                "bad-chunk"),
        failure("salt changed", flip(four, H - 1), "bad-chunk"),
        failure("wrong key", four, "bad-chunk", key=OTHER_KEY),
        failure("intact stream, manifest hash differs", four, "hash-mismatch",
                expected_sha256=hashlib.sha256(b"another blob").digest()),
    ]


def render() -> str:
    document = {
        "about": "comity attachment streams (keys/stream.py, docs/protocol.md §6); "
                 "written by generate.py beside this file",
        "construction": "STREAM over ChaCha20-Poly1305, HKDF-SHA256 stream key, 16-byte salt",
        "cases": cases(),
    }
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
