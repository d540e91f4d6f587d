"""Attachment blobs: resumable uploads, ranged downloads.

POST  /v1/networks/{network}/blobs        {"size"} -> 201 {"blob", "size"}
HEAD  /v1/networks/{network}/blobs/{id}   Upload-Offset (bytes stored), Upload-Length (declared)
PATCH /v1/networks/{network}/blobs/{id}   Upload-Offset: N, body = the next bytes -> 204, Upload-Offset
GET   /v1/networks/{network}/blobs/{id}   the complete blob; honours one Range (bytes=A-B, A-, -N)

A piece must start exactly where the stored bytes end; after a dropped
connection the client asks with HEAD and resumes there. The blob completes
when its declared size is reached. Only the owner uploads; the owner and the
recipients of the message that references the blob download.
"""

from __future__ import annotations

import re
from typing import AsyncIterator

from aiohttp import web

from keys.encoding import MAX_SAFE_INTEGER
from keys.stream import ciphertext_size

from ..blobs import BadBlobId, OffsetMismatch, check_blob_id, new_blob_id
from ..constants import MAX_BLOB_PIECES
from ..errors import RelayError
from ..httputil import body_chunks, field_int, json_response, path_name, read_json
from ..context import RELAY

#: bytes taken from the request per read while streaming a piece to disk
PIECE_READ = 256 * 1024
#: an Upload-Offset: ASCII digits only (str.isdigit would take other scripts' digits too)
_OFFSET = re.compile(r"[0-9]{1,19}")
#: one range: ``bytes=A-B``, ``bytes=A-`` (to the end) or ``bytes=-N`` (the last N bytes)
_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{0,19})|bytes=-([0-9]{1,19})")


def _blob_id(request: web.Request) -> str:
    try:
        return check_blob_id(request.match_info["id"])
    except BadBlobId:
        # Path-like or malformed ids never reach the store or the file system.
        raise RelayError("no-blob") from None


async def create(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    network = path_name(request)
    state, member = await relay.member(request, network)
    limit = ciphertext_size(state.roster.policy.max_attachment_bytes)
    body = await read_json(request, {"size"})
    size = field_int(body, "size", 0, MAX_SAFE_INTEGER)
    if size > limit:
        raise RelayError("too-large", f"an attachment may be at most {limit} bytes encrypted "
                                      "in this network")
    blob = await relay.store.create_blob(network, new_blob_id(), member.handle, size, relay.now())
    return json_response({"blob": blob.blob_id, "size": size}, status=201)


async def _owned(request: web.Request):
    relay = request.app[RELAY]
    network = path_name(request)
    _, member = await relay.member(request, network)
    blob = await relay.store.get_blob(network, _blob_id(request))
    if blob.owner != member.handle or blob.deleting:
        raise RelayError("no-blob")
    return relay, blob


async def head(request: web.Request) -> web.Response:
    relay, blob = await _owned(request)
    stored = await relay.blobs.current_size(blob.blob_id)
    return web.Response(status=200, headers={
        "Upload-Offset": str(stored), "Upload-Length": str(blob.size),
        "Upload-Complete": "1" if blob.complete else "0", "Cache-Control": "no-store"})


async def _counted(relay, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Counted as they arrive, so the metric also shows pieces cut off mid-way.
    async for chunk in chunks:
        relay.metrics.inc("comity_bytes_received_total", len(chunk))
        yield chunk


async def upload(request: web.Request) -> web.Response:
    relay, blob = await _owned(request)
    offset_text = request.headers.get("Upload-Offset", "")
    if not _OFFSET.fullmatch(offset_text):
        raise RelayError("bad-request", "send the Upload-Offset header (the byte this piece starts at)")
    if blob.complete:
        raise RelayError("bad-offset", "the blob is already complete",
                         headers={"Upload-Offset": str(blob.size)})
    if request.content_length is not None and request.content_length > relay.settings.max_blob_piece:
        raise RelayError("too-large", f"a piece may be at most {relay.settings.max_blob_piece} bytes")
    pieces = relay.blob_pieces.get(blob.blob_id, 0) + 1
    if pieces > MAX_BLOB_PIECES:
        raise RelayError("too-large", f"a blob may be uploaded in at most {MAX_BLOB_PIECES} pieces")
    relay.blob_pieces[blob.blob_id] = pieces
    declared = min(blob.size, int(offset_text) + relay.settings.max_blob_piece)
    try:
        size = await relay.blobs.append(blob.blob_id, int(offset_text),
                                        _counted(relay, body_chunks(request, PIECE_READ)),
                                        declared_size=declared)
    except OffsetMismatch as exc:
        # Tell the client where to resume, as HEAD would.
        raise RelayError("bad-offset", exc.message,
                         headers={"Upload-Offset": str(exc.current_size)}) from None
    if size == blob.size:
        await relay.blobs.complete(blob.blob_id, blob.size)
        await relay.store.set_blob_complete(blob.network, blob.blob_id)
        relay.blob_pieces.pop(blob.blob_id, None)
    return web.Response(status=204, headers={"Upload-Offset": str(size)})


async def download(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    network = path_name(request)
    _, member = await relay.member(request, network)
    blob_id = _blob_id(request)
    if member.handle not in await relay.store.blob_readers(network, blob_id):
        raise RelayError("no-blob")
    blob = await relay.store.get_blob(network, blob_id)
    if not blob.complete:
        raise RelayError("no-blob", "the blob is not completely uploaded yet")
    start, end, status = 0, blob.size, 200
    header = request.headers.get("Range")
    if header is not None:
        match = _RANGE.fullmatch(header.strip())
        if not match:
            raise RelayError("bad-range", headers={"Content-Range": f"bytes */{blob.size}"})
        if match.group(3) is not None:
            start, end = max(0, blob.size - int(match.group(3))), blob.size
        else:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else blob.size
        if start >= blob.size or end <= start:
            raise RelayError("bad-range", headers={"Content-Range": f"bytes */{blob.size}"})
        end, status = min(end, blob.size), 206
    pieces = await relay.blobs.open_range(blob_id, start, end)
    response = web.StreamResponse(status=status, headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(end - start),
        "Accept-Ranges": "bytes", "Cache-Control": "no-store"})
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    await response.prepare(request)
    async for piece in pieces:
        await response.write(piece)
    relay.metrics.inc("comity_bytes_sent_total", end - start)
    await response.write_eof()
    return response
