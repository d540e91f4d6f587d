"""Attachments: encrypt while uploading (resumable), download, decrypt, save safely.

Upload: the file is encrypted as it is read (``keys.stream``) and sent in
pieces; memory stays flat. The content key, stream salt and blob id are kept
in a sealed ``upload`` row keyed by the file's path, size and modification
time, so a dropped connection or a restarted command resumes: the ciphertext
is regenerated from the start (same key and salt, unchanged file) and only
the bytes the relay lacks are sent.

Download: the ciphertext is stored as is under ``COMITY_HOME/blobs`` (it is
useless without the key in the sealed message row) and checked against the
manifest hash. Saving decrypts into a temporary file beside the target and
renames it only when the whole stream authenticated.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import re
import unicodedata
from pathlib import Path
from typing import Callable

from keys.encoding import b64d, b64e
from keys.errors import StreamError
from keys.stream import SALT_BYTES, Decryptor, Encryptor, ciphertext_size, generate_key

from .errors import ClientError, RelayRefused
from .relay_client import UPLOAD_PIECE, RelayClient
from .state import LocalState

Progress = Callable[[int], None]       # called with the number of new bytes done
READ_BYTES = 1024 * 1024
#: how many times an upload or download resumes after a dropped connection in one command
MAX_RESUMES = 5


def _upload_key(network: str, path: Path, stat: os.stat_result) -> str:
    ident = f"{network}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()


def _ciphertext_pieces(path: Path, key: bytes, salt: bytes, skip: int):
    """The file's ciphertext from byte ``skip`` on, in pieces of at most UPLOAD_PIECE."""
    encryptor = Encryptor.for_resumed_upload(key, salt)
    position, pending = 0, bytearray()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(READ_BYTES)
            out = encryptor.push(block) if block else encryptor.finish()
            if position + len(out) > skip:
                pending += out[max(0, skip - position):]
            position += len(out)
            while len(pending) >= UPLOAD_PIECE:
                yield bytes(pending[:UPLOAD_PIECE])
                del pending[:UPLOAD_PIECE]
            if not block:
                break
    if pending:
        yield bytes(pending)
    yield encryptor.result


async def upload(state: LocalState, relay: RelayClient, network: str, handle: str, path: Path,
                 now: int, progress: Progress | None = None) -> dict:
    """Upload one file; return its manifest entry."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ClientError(f"file not found: {path}") from None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    if not path.is_file():
        raise ClientError(f"not a regular file: {path}")
    row_key = _upload_key(network, path, stat)
    saved = state.get("upload", network, row_key)
    if saved is None:
        key, salt = generate_key(), os.urandom(SALT_BYTES)   # one key per attachment
        size = ciphertext_size(stat.st_size)
        blob = await relay.create_blob(network, handle, size)
        saved = {"blob": blob, "key": b64e(key), "salt": b64e(salt), "size": size}
        state.put("upload", network, row_key, saved, at=now)
    key, salt, blob = b64d(saved["key"]), b64d(saved["salt"]), saved["blob"]
    result = None
    for attempt in range(MAX_RESUMES + 1):
        try:
            offset = await relay.blob_offset(network, handle, blob)
        except RelayRefused as exc:
            if exc.code == "no-blob":     # the relay dropped the unfinished blob: start afresh
                state.delete("upload", network, row_key)
                return await upload(state, relay, network, handle, path, now, progress)
            raise
        if progress and offset:
            progress(min(offset, saved["size"]))
        try:
            pieces = _ciphertext_pieces(path, key, salt, offset)
            # Reading and encrypting run in a thread: the event loop stays responsive.
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                if not isinstance(piece, bytes):
                    result = piece
                    break
                if offset < saved["size"]:
                    offset = await relay.upload_piece(network, handle, blob, offset, piece)
                    if progress:
                        progress(len(piece))
            break
        except ClientError as exc:
            if attempt == MAX_RESUMES or not _retryable(exc):
                raise
    if result is None or result.ciphertext_size != saved["size"]:
        raise ClientError(f"{path} changed while it was being sent; send it again")
    state.delete("upload", network, row_key)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return {"name": safe_name(path.name), "media_type": media_type, "size": result.plaintext_size,
            "blob": blob, "key": b64e(key), "hash": b64e(result.ciphertext_sha256),
            "ciphertext_size": result.ciphertext_size}


def _retryable(exc: ClientError) -> bool:
    from .errors import RelayUnreachable
    return isinstance(exc, RelayUnreachable) or (isinstance(exc, RelayRefused) and exc.code == "bad-offset")


async def download(state: LocalState, relay: RelayClient, network: str, handle: str, entry: dict,
                   progress: Progress | None = None) -> Path:
    """Fetch an attachment's ciphertext into COMITY_HOME/blobs and check its hash."""
    target = state.blob_path(entry["blob"])
    if target.exists() and target.stat().st_size == entry["ciphertext_size"]:
        return target
    part = target.with_name(target.name + ".part")
    for attempt in range(MAX_RESUMES + 1):
        have = part.stat().st_size if part.exists() else 0
        if progress and have:
            progress(have)
        with open(part, "ab") as fh:
            def sink(chunk: bytes) -> None:
                fh.write(chunk)
                if progress:
                    progress(len(chunk))
            try:
                if have < entry["ciphertext_size"]:
                    await relay.download(network, handle, entry["blob"], have, sink)
                break
            except ClientError as exc:
                if attempt == MAX_RESUMES or not _retryable(exc):
                    raise
    digest = hashlib.sha256()
    with open(part, "rb") as fh:
        while block := fh.read(READ_BYTES):
            digest.update(block)
    if part.stat().st_size != entry["ciphertext_size"] or b64e(digest.digest()) != entry["hash"]:
        part.unlink()
        raise ClientError(f"attachment {entry['name']} arrived damaged (its hash does not match the "
                          "sender's)", hint="run the command again to fetch it anew")
    os.replace(part, target)
    return target


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|\u202a-\u202e\u2066-\u2069]")


def safe_name(name: str) -> str:
    """A file name with no path, no control or direction characters, never empty or hidden."""
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip().lstrip(".")
    if name in ("", ".", ".."):
        name = "attachment"
    return name[:200]


def save(state: LocalState, entry: dict, directory: Path) -> Path:
    """Decrypt a downloaded attachment into ``directory`` under a new, sanitised name."""
    directory.mkdir(parents=True, exist_ok=True)
    source = state.blob_path(entry["blob"])
    if not source.exists():
        raise ClientError(f"attachment {entry['name']} was not downloaded",
                          hint="run 'comity inbox' to fetch it")
    target = _free_name(directory, safe_name(entry["name"]))
    tmp = target.with_name(f".{target.name}.comity-partial")
    decryptor = Decryptor(b64d(entry["key"]), expected_sha256=b64d(entry["hash"]))
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            while block := src.read(READ_BYTES):
                dst.write(decryptor.feed(block))
            dst.write(decryptor.finish())
            dst.flush()
            os.fsync(dst.fileno())
    except StreamError:
        tmp.unlink(missing_ok=True)
        raise ClientError(f"attachment {entry['name']} does not decrypt: it was altered") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # link() refuses to overwrite, so a file created meanwhile under that name survives.
    while True:
        try:
            os.link(tmp, target)
            break
        except FileExistsError:
            target = _free_name(directory, target.name)
    tmp.unlink()
    return target


def _free_name(directory: Path, name: str) -> Path:
    candidate = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({n}){suffix}"
        n += 1
    return candidate
