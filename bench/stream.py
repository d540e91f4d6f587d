"""Benchmark the two candidate attachment-stream constructions.

    python bench/stream.py [--size-mib 256] [--repeat 3]

Candidates (both are framing over a vetted AEAD; neither is a new primitive):

* ``secretstream``: libsodium crypto_secretstream_xchacha20poly1305 through
  pynacl's low-level bindings (final chunk marked with TAG_FINAL).
* ``stream``: the STREAM construction as age uses it, over pyca/cryptography's
  ChaCha20Poly1305: 12-byte nonce = 11-byte big-endian chunk counter + 1-byte
  last-chunk flag.

Both run the same framing (a short header given to every chunk as associated
data, one chunk of look-ahead so the last chunk can be marked) so the figures
compare the constructions and their Python bindings, not two framings. The
chosen construction is also measured end to end through ``keys.stream`` (which
adds key derivation and SHA-256 of the ciphertext), next to a plain SHA-256
pass and a copy-only pass as floors.

Source and destination are memory-backed (io.BytesIO, or a sink that discards)
so the figures are CPU cost only; the process is pinned to one core.
Prints a table; writes JSON to bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import cryptography
import nacl
import nacl.bindings as sodium
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
KIB = 1024
HEADER = b"bench-stream-hdr"  # stands in for the real header (associated data of every chunk)
TAG_LEN = 16


class Sink:
    """A writable that keeps nothing but a byte count."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data) -> int:
        self.n += len(data)
        return len(data)


# --- candidate (a): libsodium secretstream -----------------------------------

def ss_encrypt(key: bytes, src, dst, chunk: int) -> None:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    dst.write(HEADER + sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key))
    push = sodium.crypto_secretstream_xchacha20poly1305_push
    cur = src.read(chunk)
    while True:
        nxt = src.read(chunk)
        if not nxt:
            dst.write(push(state, cur, HEADER, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL))
            return
        dst.write(push(state, cur, HEADER))
        cur = nxt


def ss_decrypt(key: bytes, src, dst, chunk: int) -> None:
    hlen = len(HEADER) + sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
    head = src.read(hlen)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, head[len(HEADER):], key)
    pull = sodium.crypto_secretstream_xchacha20poly1305_pull
    final = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
    ct_chunk = chunk + sodium.crypto_secretstream_xchacha20poly1305_ABYTES
    while True:
        block = src.read(ct_chunk)
        plain, tag = pull(state, block, HEADER)
        dst.write(plain)
        if tag == final:
            if src.read(1):
                raise ValueError("data after the final chunk")
            return


# --- candidate (b): STREAM over ChaCha20-Poly1305 -----------------------------

def st_encrypt(key: bytes, src, dst, chunk: int) -> None:
    aead = ChaCha20Poly1305(key)
    dst.write(HEADER)
    counter = 0
    cur = src.read(chunk)
    while True:
        nxt = src.read(chunk)
        last = not nxt
        nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        dst.write(aead.encrypt(nonce, cur, HEADER))
        if last:
            return
        counter += 1
        cur = nxt


def st_decrypt(key: bytes, src, dst, chunk: int) -> None:
    aead = ChaCha20Poly1305(key)
    if src.read(len(HEADER)) != HEADER:
        raise ValueError("bad header")
    ct_chunk = chunk + TAG_LEN
    counter = 0
    cur = src.read(ct_chunk)
    while True:
        nxt = src.read(ct_chunk)
        last = not nxt
        nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        dst.write(aead.decrypt(nonce, cur, HEADER))
        if last:
            return
        counter += 1
        cur = nxt


# --- floors and the real module ------------------------------------------------

def copy_only(key: bytes, src, dst, chunk: int) -> None:
    while block := src.read(chunk):
        dst.write(block)


def sha256_only(key: bytes, src, dst, chunk: int) -> None:
    h = hashlib.sha256()
    while block := src.read(chunk):
        h.update(block)
        dst.write(block)


def comity_encrypt(key: bytes, src, dst, chunk: int) -> None:
    from keys import stream
    stream.encrypt_stream(key, src, dst, chunk_size=chunk)


def comity_decrypt(key: bytes, src, dst, chunk: int) -> None:
    from keys import stream
    stream.decrypt_stream(key, src, dst)


def best_rate(fn, key: bytes, data: bytes, chunk: int, repeat: int, keep: bool) -> tuple[float, bytes]:
    """Best MB/s (10**6 bytes of plaintext per second) over ``repeat`` runs."""
    best = float("inf")
    out = b""
    for _ in range(repeat):
        src = io.BytesIO(data)
        dst = io.BytesIO() if keep else Sink()
        t0 = time.perf_counter()
        fn(key, src, dst, chunk)
        best = min(best, time.perf_counter() - t0)
        if keep:
            out = dst.getvalue()
        del src, dst
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="plaintext size (default 256)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (default 3)")
    ap.add_argument("--chunks-kib", default="16,64,1024", help="chunk sizes in KiB (default 16,64,1024)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream.json"))
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        # One core: the figures must not depend on how many cores happen to be idle.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    size = args.size_mib * MIB
    data = os.urandom(MIB) * args.size_mib  # content does not change ChaCha20 speed
    key = bytes(range(32))
    chunks = [int(c) * KIB for c in args.chunks_kib.split(",")]

    try:
        import keys.stream  # noqa: F401
        have_comity = True
    except ImportError:
        have_comity = False

    rows = []

    def run(name: str, enc, dec, chunk: int) -> None:
        t_enc, _ = best_rate(enc, key, data, chunk, args.repeat, keep=False)
        if dec is not None:  # one untimed pass keeps the ciphertext for decryption
            _, ct = best_rate(enc, key, data, chunk, 1, keep=True)
        row = {"construction": name, "chunk_kib": chunk // KIB,
               "encrypt_mb_s": round(size / t_enc / 1e6)}
        if dec is not None:
            t_dec, _ = best_rate(dec, key, ct, chunk, args.repeat, keep=False)
            row["decrypt_mb_s"] = round(size / t_dec / 1e6)
            row["overhead_bytes"] = len(ct) - size
        rows.append(row)
        print(f"{name:<36} {chunk // KIB:>6}   {row['encrypt_mb_s']:>8}   "
              f"{row.get('decrypt_mb_s', '-'):>8}", flush=True)

    print(f"{args.size_mib} MiB from memory, one core, best of {args.repeat}; MB/s = 10^6 B/s of plaintext")
    print(f"{'construction':<36} {'chunk':>6}   {'encrypt':>8}   {'decrypt':>8}")
    print(f"{'':<36} {'KiB':>6}   {'MB/s':>8}   {'MB/s':>8}")
    for chunk in chunks:
        run("copy only (floor)", copy_only, None, chunk)
        run("sha-256 only (floor)", sha256_only, None, chunk)
        run("(a) secretstream xchacha20poly1305", ss_encrypt, ss_decrypt, chunk)
        run("(b) STREAM chacha20poly1305", st_encrypt, st_decrypt, chunk)
        if have_comity:
            run("keys.stream (with SHA-256)", comity_encrypt, comity_decrypt, chunk)

    report = {
        "benchmark": "stream",
        "size_mib": args.size_mib,
        "repeat": args.repeat,
        "unit": "MB/s (10^6 bytes of plaintext per second), best run",
        "machine": {
            "cpu": _cpu_model(),
            "cores_available": os.cpu_count(),
            "cores_used": 1,
            "python": platform.python_version(),
            "cryptography": cryptography.__version__,
            "pynacl": nacl.__version__,
        },
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
