"""Blob files: the encrypted attachment bytes, one file per blob, beside the database.

A blob is uploaded in pieces to ``<root>/<id>.part`` (opened in append mode;
each piece must start exactly where the file ends, so an interrupted upload
resumes from ``current_size``), then ``complete`` fsyncs it and renames it to
``<root>/<id>``. Downloads read ranges of the complete file in 256 KiB pieces.
Memory stays flat whatever the size, and every file operation runs in a
thread so the event loop never waits on the disk.

Durability: a piece is fsynced before ``append`` returns (and along the way
for long pieces); ``complete`` fsyncs the file and, after the rename, the
folder, so a completed blob survives power loss. Who may read or write a blob
is decided by the store (``relay.store``); this module only guards the bytes.

An upload takes an exclusive ``flock`` on its ``.part`` file, so two
concurrent uploads of one blob (from this process or another relay process
sharing the folder) cannot interleave: the second is refused with UploadBusy.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import fcntl
import os
import re
import secrets
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Iterable

from .db import StoreError, fsync_dir

#: random bytes in a blob id: 128 bits, unguessable and never colliding
BLOB_ID_BYTES = 16
#: 16 bytes are 22 base64url characters; nothing else (no dots, no slashes) is a blob id
_BLOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")
#: a download reads this much per thread hop: large enough to be cheap, small enough to be flat
READ_PIECE = 256 * 1024
#: incoming chunks are gathered up to this size before one write (fewer thread hops)
WRITE_BUFFER = 1024 * 1024
#: a long upload piece is also fsynced every this many bytes, so little is ever unsynced
SYNC_EVERY = 64 * 1024 * 1024


class BadBlobId(StoreError):
    """the blob id is not valid"""
    code = "bad-request"


class NoBlobFile(StoreError):
    """no such blob"""
    code = "no-blob"


class OffsetMismatch(StoreError):
    """the upload offset does not match what is stored: ask with HEAD and resume"""
    code = "bad-offset"

    def __init__(self, message: str | None = None, *, current_size: int):
        super().__init__(message)
        #: where the next piece must start
        self.current_size = current_size


class TooLarge(StoreError):
    """the upload is larger than the size declared for the blob"""
    code = "too-large"


class UploadBusy(StoreError):
    """another upload of this blob is in progress"""
    code = "conflict"


class AlreadyComplete(StoreError):
    """the blob is already completely uploaded"""
    code = "conflict"


class BadRange(StoreError):
    """the requested range is not satisfiable"""
    code = "bad-range"


def new_blob_id() -> str:
    """A fresh random blob id: 22 base64url characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(BLOB_ID_BYTES)).rstrip(b"=").decode()


def check_blob_id(blob_id: object) -> str:
    """Return ``blob_id`` if it is well formed; raise BadBlobId otherwise."""
    if not isinstance(blob_id, str) or not _BLOB_ID.fullmatch(blob_id):
        raise BadBlobId()
    return blob_id


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _lock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UploadBusy() from None


def _close(fd: int, sync: bool) -> None:
    try:
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)                    # also releases the flock


async def _chunks(source: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if hasattr(source, "__aiter__"):
        async for chunk in source:
            yield chunk
    else:
        for chunk in source:
            yield chunk


class BlobFiles:
    """The folder of blob files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        """The complete blob's file."""
        return self.root / check_blob_id(blob_id)

    def part_path(self, blob_id: str) -> Path:
        """The file an upload appends to."""
        return self.root / (check_blob_id(blob_id) + ".part")

    async def current_size(self, blob_id: str) -> int:
        """Bytes stored so far: the next upload piece starts here (the full size once complete)."""
        part, final = self.part_path(blob_id), self.path(blob_id)

        def size() -> int:
            for path in (part, final):
                try:
                    return path.stat().st_size
                except FileNotFoundError:
                    pass
            return 0
        return await asyncio.to_thread(size)

    async def is_complete(self, blob_id: str) -> bool:
        return await asyncio.to_thread(self.path(blob_id).exists)

    async def append(self, blob_id: str, offset: int,
                     chunks: AsyncIterable[bytes] | Iterable[bytes], *, declared_size: int) -> int:
        """Append one piece; return the new size once it is on disk.

        Refuses with OffsetMismatch unless ``offset`` is the current size, with
        TooLarge (keeping what came before the chunk that overflows) if the
        piece would take the blob past ``declared_size``, with UploadBusy if
        another upload holds the blob, with AlreadyComplete after ``complete``.
        What was written before an error or a dropped connection is kept and
        counted by ``current_size``.
        """
        part, final = self.part_path(blob_id), self.path(blob_id)

        def open_part() -> tuple[int, int]:
            if final.exists():
                raise AlreadyComplete()
            fd = os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _lock(fd)
            if final.exists():          # completed while we waited to open: leave no stray part
                os.close(fd)
                if part.exists() and part.stat().st_size == 0:
                    part.unlink()
                raise AlreadyComplete()
            return fd, os.fstat(fd).st_size

        fd, size = await asyncio.to_thread(open_part)
        wrote = False
        try:
            if offset != size:
                raise OffsetMismatch(f"the upload is at byte {size}, not {offset}",
                                     current_size=size)
            buffer, unsynced = bytearray(), 0

            async def flush() -> None:
                nonlocal size, unsynced, wrote
                if buffer:
                    data = bytes(buffer)
                    buffer.clear()
                    wrote = True
                    await asyncio.to_thread(_write_all, fd, data)
                    size += len(data)
                    unsynced += len(data)
                if unsynced >= SYNC_EVERY:
                    await asyncio.to_thread(os.fsync, fd)
                    unsynced = 0

            try:
                async for chunk in _chunks(chunks):
                    if size + len(buffer) + len(chunk) > declared_size:
                        await flush()
                        raise TooLarge(f"the blob was declared as {declared_size} bytes")
                    buffer += chunk
                    if len(buffer) >= WRITE_BUFFER:
                        await flush()
            except BaseException:
                # A dropped connection keeps what arrived, so the client resumes after it.
                await asyncio.shield(flush())
                raise
            await flush()
            return size
        finally:
            # Shielded: even if the upload is cancelled the file is synced and closed.
            await asyncio.shield(asyncio.to_thread(_close, fd, wrote))

    async def complete(self, blob_id: str, expected_size: int | None = None) -> int:
        """Make the upload final: fsync, rename ``.part`` to the blob's name, fsync the folder.

        Idempotent once done. With ``expected_size``, refuses (OffsetMismatch)
        until exactly that many bytes are stored. Returns the size.
        """
        part, final = self.part_path(blob_id), self.path(blob_id)

        def finish() -> int:
            try:
                fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if final.exists():
                    return final.stat().st_size
                if expected_size == 0:  # an empty blob needs no upload piece
                    fd = os.open(part, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
                else:
                    raise NoBlobFile("nothing was uploaded for this blob") from None
            _lock(fd)
            try:
                size = os.fstat(fd).st_size
                if expected_size is not None and size != expected_size:
                    raise OffsetMismatch(f"{size} of {expected_size} bytes are uploaded",
                                         current_size=size)
                os.fsync(fd)
                os.rename(part, final)
                fsync_dir(self.root)
                return size
            finally:
                os.close(fd)
        return await asyncio.to_thread(finish)

    async def size(self, blob_id: str) -> int:
        """Size of the complete blob. Raises NoBlobFile if it is not complete."""
        path = self.path(blob_id)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NoBlobFile() from None

    async def open_range(self, blob_id: str, start: int = 0,
                         end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` (inclusive) to ``end`` (exclusive; None: the end) of a complete blob.

        Checks the range now (NoBlobFile, BadRange) and returns an async
        iterator of pieces of at most READ_PIECE bytes. Each piece opens,
        reads and closes the file in a thread, so an abandoned download holds
        no file open.
        """
        path = self.path(blob_id)
        total = await self.size(blob_id)
        end = total if end is None else end
        if not 0 <= start <= end <= total:
            raise BadRange(f"range {start}-{end} is outside the blob's {total} bytes")

        def read(position: int, length: int) -> bytes:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NoBlobFile("the blob was deleted during the download") from None
            try:
                data = os.pread(fd, length, position)
            finally:
                os.close(fd)
            if len(data) != length:
                raise OSError(errno.EIO, f"blob file {path.name} is shorter than recorded")
            return data

        async def pieces() -> AsyncIterator[bytes]:
            position = start
            while position < end:
                length = min(READ_PIECE, end - position)
                yield await asyncio.to_thread(read, position, length)
                position += length
        return pieces()

    async def delete(self, blob_id: str) -> None:
        """Remove the blob's files, complete or partial; nothing to remove is fine."""
        paths = (self.path(blob_id), self.part_path(blob_id))

        def remove() -> None:
            for path in paths:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        await asyncio.to_thread(remove)
