"""Attachments: encrypt while uploading (resumable), download, decrypt, save safely.

Upload: the file is encrypted as it is read (``keys.stream``) and sent in
pieces; memory stays flat. The content key, stream salt and blob id are kept
in a sealed ``upload`` row keyed by the file's path, size and modification
time, so a dropped connection or a restarted command resumes: the ciphertext
is regenerated from the start (same key and salt, unchanged file) and only
the bytes the relay lacks are sent.

Download, the cache and saving are in client/downloads.py (``download`` and
``save`` are re-exported here).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from pathlib import Path

from keys.encoding import b64d, b64e
from keys.stream import SALT_BYTES, Encryptor, ciphertext_size, generate_key

from .downloads import MAX_RESUMES, READ_BYTES, Progress, download, retryable, save  # noqa: F401
from .errors import ClientError, RelayRefused
from .filenames import disk_name
from .relay_client import UPLOAD_PIECE, RelayClient
from .state import LocalState


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
            if attempt == MAX_RESUMES or not retryable(exc):
                raise
    if result is None or result.ciphertext_size != saved["size"]:
        raise ClientError(f"{path} changed while it was being sent; send it again")
    state.delete("upload", network, row_key)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # The sender's own file name, made safe the way a recipient will save it.
    return {"name": disk_name(path.name), "media_type": media_type, "size": result.plaintext_size,
            "blob": blob, "key": b64e(key), "hash": b64e(result.ciphertext_sha256),
            "ciphertext_size": result.ciphertext_size}
