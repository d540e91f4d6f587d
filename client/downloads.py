"""Attachments received: download into the cache, then decrypt and save safely.

The cache (``COMITY_HOME/blobs``) holds ciphertexts as downloaded, useless
without the keys in the sealed message rows. A file there is named by the
SHA-256 the sender signed in the manifest, not by the relay's blob id, and is
hashed again at every use: the relay cannot make one message's attachment
stand in for another's, and a damaged or planted file is never used.

A download stops at the signed ``ciphertext_size``: a relay that sends more
is refused before it can fill the disk.

Saving decrypts into a private temporary file (0600, created exclusively,
never through a symlink) and links it to its final name only once the whole
stream authenticated. The name comes from client/filenames.py; a name already
taken, by a file or a dangling symlink, is never written through: the next
numbered name is tried, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Callable

from keys.encoding import b64d
from keys.errors import StreamError
from keys.stream import Decryptor

from .errors import ClientError, RelayRefused, RelayUnreachable, TrustError
from .filenames import disk_name, name_limit, numbered
from .home import NOFOLLOW, make_private_dirs, open_private
from .relay_client import RelayClient
from .state import LocalState

Progress = Callable[[int], None]       # called with the number of new bytes done
READ_BYTES = 1024 * 1024
#: how many times an upload or download resumes after a dropped connection in one command
MAX_RESUMES = 5
#: a manifest hash is a SHA-256
HASH_BYTES = 32
#: an unfinished download beside its cache file
PART_SUFFIX = ".part"
#: names tried for one saved attachment: "a.pdf", "a (1).pdf", ... "a (99).pdf"
MAX_NAME_TRIES = 100


#: refusals a transfer resumes after: the offset moved, or the relay stopped waiting for a
#: stalled piece (it keeps what arrived; HEAD says where to go on)
_RESUMABLE = frozenset({"bad-offset", "request-timeout"})


def retryable(exc: ClientError) -> bool:
    return isinstance(exc, RelayUnreachable) or (isinstance(exc, RelayRefused) and exc.code in _RESUMABLE)


async def download(state: LocalState, relay: RelayClient, network: str, handle: str, entry: dict,
                   progress: Progress | None = None) -> Path:
    """Fetch an attachment's ciphertext into the cache; check its exact size and its hash."""
    size, digest = entry["ciphertext_size"], _signed_hash(entry)
    target = cache_path(state, digest)
    if _cached(target, size, digest):
        return target
    part = target.with_name(target.name + PART_SUFFIX)
    try:
        for attempt in range(MAX_RESUMES + 1):
            have = _regular_size(part)
            if have is None or have > size:    # a planted link or an overlong leftover: start afresh
                part.unlink(missing_ok=True)
                have = 0
            if progress and have:
                progress(have)
            with os.fdopen(open_private(part, os.O_APPEND), "ab") as fh:
                def sink(chunk: bytes) -> None:
                    fh.write(chunk)
                    if progress:
                        progress(len(chunk))
                try:
                    if have < size:
                        # limit: the relay is stopped at the signed size, not trusted to stop
                        await relay.download(network, handle, entry["blob"], have, sink, limit=size - have)
                    break
                except ClientError as exc:
                    if attempt == MAX_RESUMES or not retryable(exc):
                        raise
    except TrustError as exc:
        part.unlink(missing_ok=True)
        raise ClientError(f"attachment {entry['name']}: {exc.message}") from None
    except OSError as exc:
        raise ClientError(f"cannot store attachment {entry['name']} in {state.blob_dir}: "
                          f"{exc.strerror}") from None
    if not _cached(part, size, digest):
        part.unlink(missing_ok=True)
        raise ClientError(f"attachment {entry['name']} arrived damaged (its size or hash does not match "
                          "the sender's)", hint="run the command again to fetch it anew")
    os.replace(part, target)
    return target


def cache_path(state: LocalState, digest: bytes) -> Path:
    """Where a ciphertext is cached: named by its signed SHA-256, not by the relay's blob id."""
    return state.blob_dir / digest.hex()


def _signed_hash(entry: dict) -> bytes:
    return b64d(entry["hash"], length=HASH_BYTES, what="attachment hash")


def _regular_size(path: Path) -> int | None:
    """The size of the regular file at ``path`` (0 if there is none); None for anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _cached(path: Path, size: int, digest: bytes) -> bool:
    """True if ``path`` is a regular file of exactly ``size`` bytes whose SHA-256 is ``digest``.

    Checked at every use: a file in the cache is never trusted for being there.
    """
    if _regular_size(path) != size:
        return False
    hasher = hashlib.sha256()
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "rb") as fh:
            while block := fh.read(READ_BYTES):
                hasher.update(block)
    except OSError:                     # absent (a size-0 entry), or replaced meanwhile
        return False
    return hmac.compare_digest(hasher.digest(), digest)


def save(state: LocalState, entry: dict, directory: Path) -> Path:
    """Decrypt a downloaded attachment into ``directory`` under a new, sanitised name."""
    digest = _signed_hash(entry)
    source = cache_path(state, digest)
    if not _cached(source, entry["ciphertext_size"], digest):
        raise ClientError(f"attachment {entry['name']} was not downloaded, or its copy here is damaged",
                          hint="run 'comity inbox' to fetch it")
    try:
        make_private_dirs(directory)
        limit = name_limit(directory)
        # A short random name: never taken, and within the name limit whatever the wanted name.
        tmp = directory / f".comity-{secrets.token_hex(8)}.partial"
        try:
            _decrypt(source, entry, tmp)
            return _link_free_name(tmp, directory, disk_name(entry["name"], limit), limit)
        finally:
            tmp.unlink(missing_ok=True)
    except StreamError:
        raise ClientError(f"attachment {entry['name']} does not decrypt: it was altered") from None
    except OSError as exc:
        raise ClientError(f"cannot save attachment {entry['name']} in {directory}: {exc.strerror}") from None


def _decrypt(source: Path, entry: dict, tmp: Path) -> None:
    # expected_sha256: the cache file is checked against the signed hash once more as it is read
    decryptor = Decryptor(b64d(entry["key"]), expected_sha256=_signed_hash(entry))
    with open(source, "rb") as src, os.fdopen(open_private(tmp, os.O_EXCL), "wb") as dst:
        while block := src.read(READ_BYTES):
            dst.write(decryptor.feed(block))
        dst.write(decryptor.finish())
        dst.flush()
        os.fsync(dst.fileno())


def _link_free_name(tmp: Path, directory: Path, wanted: str, limit: int) -> Path:
    # link() creates the name or fails if anything is there, a dangling symlink included:
    # nothing is overwritten and no link is followed.
    for n in range(MAX_NAME_TRIES):
        target = directory / numbered(wanted, n, limit)
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            continue
    raise ClientError(f"cannot save attachment {wanted}: {directory} already holds it and "
                      f"{MAX_NAME_TRIES - 1} numbered copies", hint="save it into another folder")
