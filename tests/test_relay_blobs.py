"""Attachment blobs: resumable uploads in pieces, ranged downloads, who may read, cleanup."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from keys.constants import MINUTE
from keys.encoding import b64d
from keys.log import default_policy
from keys.stream import decrypt_stream
from relay.blobs import WRITE_BUFFER
from relay.constants import ORPHAN_BLOB_TTL
from tests.relay_helpers import create_network, members, relay, trio  # noqa: F401  (fixtures)

#: how long a test waits for the relay to settle after a dropped connection
SETTLE_TIMEOUT = 10.0


async def create(network, owner, size):
    return await network.relay.post(network.path + "/blobs", {"size": size}, member=owner)


async def head(network, member, blob):
    return await network.relay.request("HEAD", f"{network.path}/blobs/{blob}", member=member)


async def download(network, member, blob, range_header=None):
    headers = {"Range": range_header} if range_header else None
    return await network.relay.get(f"{network.path}/blobs/{blob}", member=member, headers=headers)


# -- upload ----------------------------------------------------------------------------------------

async def test_upload_in_pieces_with_offsets(trio):
    ana, _, _ = members(trio)
    reply = await create(trio, ana, 10)
    assert reply.status == 201
    blob = reply.json()["blob"]
    assert reply.json()["size"] == 10

    reply = await head(trio, ana, blob)
    assert (reply.status, reply.headers["Upload-Offset"], reply.headers["Upload-Length"],
            reply.headers["Upload-Complete"]) == (200, "0", "10", "0")

    reply = await trio.patch_blob(ana, blob, 0, b"abcd")
    assert (reply.status, reply.headers["Upload-Offset"]) == (204, "4")
    assert (await head(trio, ana, blob)).headers["Upload-Offset"] == "4"

    # Only the owner can download, and only once complete.
    assert (await download(trio, ana, blob)).status == 404

    reply = await trio.patch_blob(ana, blob, 4, b"efghij")
    assert (reply.status, reply.headers["Upload-Offset"]) == (204, "10")
    reply = await head(trio, ana, blob)
    assert (reply.headers["Upload-Offset"], reply.headers["Upload-Complete"]) == ("10", "1")
    reply = await download(trio, ana, blob)
    assert (reply.status, reply.body) == (200, b"abcdefghij")
    assert reply.headers["Accept-Ranges"] == "bytes"

    reply = await trio.patch_blob(ana, blob, 10, b"k")
    assert (reply.status, reply.error, reply.headers["Upload-Offset"]) == (409, "bad-offset", "10")


async def test_wrong_offset_refused_with_the_right_one(trio):
    ana, _, _ = members(trio)
    blob = (await create(trio, ana, 100)).json()["blob"]
    assert (await trio.patch_blob(ana, blob, 0, b"x" * 30)).status == 204
    for offset in (0, 29, 31, 100):
        reply = await trio.patch_blob(ana, blob, offset, b"y" * 10)
        assert (reply.status, reply.error) == (409, "bad-offset"), offset
        assert reply.headers["Upload-Offset"] == "30"
    assert (await head(trio, ana, blob)).headers["Upload-Offset"] == "30"


async def test_upload_limits(trio):
    ana, bob, _ = members(trio)
    blob = (await create(trio, ana, 10)).json()["blob"]
    reply = await trio.patch_blob(ana, blob, 0, b"x" * 11)            # past the declared size
    assert (reply.status, reply.error) == (413, "too-large")
    reply = await trio.relay.request("PATCH", f"{trio.path}/blobs/{blob}", member=ana, data=b"x")
    assert (reply.status, reply.error) == (400, "bad-request")          # no Upload-Offset
    for value in ("-1", "abc", "1" * 25, ""):
        reply = await trio.relay.request("PATCH", f"{trio.path}/blobs/{blob}", member=ana,
                                         data=b"x", headers={"Upload-Offset": value})
        assert (reply.status, reply.error) == (400, "bad-request"), value
    reply = await trio.patch_blob(bob, blob, 0, b"x")                  # not bob's blob
    assert (reply.status, reply.error) == (404, "no-blob")
    assert (await head(trio, bob, blob)).status == 404
    for size in (-1, "10", 1.5, None, True):
        assert (await create(trio, ana, size)).status == 400, size


async def test_declared_size_within_policy(relay):
    network = await create_network(relay, policy={**default_policy(),
                                                  "max_attachment_bytes": 1000})
    reply = await create(network, network.admin, 10 ** 9)
    assert (reply.status, reply.error) == (413, "too-large")
    assert (await relay.table_counts())["blobs"] == 0


async def test_empty_blob(trio):
    ana, _, _ = members(trio)
    blob = (await create(trio, ana, 0)).json()["blob"]
    assert (await trio.patch_blob(ana, blob, 0, b"")).status == 204
    reply = await download(trio, ana, blob)
    assert (reply.status, reply.body) == (200, b"")


async def resume(network, owner, blob, data: bytes) -> int:
    """Ask where the upload stands and send the rest; retried while the cut upload still
    holds the blob. Returns the offset the upload resumed from."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while True:
        offset = int((await head(network, owner, blob)).headers["Upload-Offset"])
        reply = await network.patch_blob(owner, blob, offset, data[offset:])
        if reply.status == 204:
            return offset
        # 409: the dropped upload has not finished closing the file yet (busy or moved on).
        assert reply.status == 409 and loop.time() < deadline, reply
        await asyncio.sleep(0.01)


async def bytes_received(relay) -> int:
    """The relay's own count of request bytes it has taken in (from /metrics)."""
    text = (await relay.get("/metrics")).body.decode()
    return int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("comity_bytes_received_total ")))


async def cut_upload(network, owner, blob, data: bytes, sent: int) -> None:
    """PATCH all of ``data`` at offset 0 but drop the connection after ``sent`` bytes of body,
    once the relay has read them (its byte counter says so: no fixed sleep)."""
    relay = network.relay
    before = await bytes_received(relay)
    reader, writer = await asyncio.open_connection(relay.server.host, relay.server.port)
    writer.write((f"PATCH {network.path}/blobs/{blob} HTTP/1.1\r\n"
                  f"Host: {relay.server.host}\r\n"
                  f"Authorization: Bearer {owner.token}\r\n"
                  "Content-Type: application/offset+octet-stream\r\n"
                  "Upload-Offset: 0\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode("ascii") + data[:sent])
    await writer.drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while await bytes_received(relay) - before < sent:
        assert loop.time() < deadline, "the relay never read the piece"
        await asyncio.sleep(0.005)
    writer.transport.abort()                     # cut mid-body: no FIN, no rest


@pytest.mark.parametrize("sent", [80_000, WRITE_BUFFER + WRITE_BUFFER // 4],
                         ids=["small-piece", "past-the-write-buffer"])
async def test_resume_after_a_dropped_connection(trio, sent):
    ana, _, _ = members(trio)
    data = os.urandom(3 * WRITE_BUFFER)
    blob = (await create(trio, ana, len(data))).json()["blob"]
    await cut_upload(trio, ana, blob, data, sent)

    # Every byte that arrived before the cut is kept: the upload resumes right after it.
    assert await resume(trio, ana, blob, data) == sent
    reply = await head(trio, ana, blob)
    assert (reply.headers["Upload-Offset"], reply.headers["Upload-Complete"]) == (
        str(len(data)), "1")
    assert (await download(trio, ana, blob)).body == data
    assert not [p for p in (trio.relay.data_dir / "blobs").iterdir() if p.suffix == ".part"]


# -- download --------------------------------------------------------------------------------------

async def test_download_with_range(trio):
    ana, _, _ = members(trio)
    data = os.urandom(1000)
    blob = await trio.upload(ana, data, piece=300)

    cases = {"bytes=0-99": (0, 100), "bytes=900-": (900, 1000), "bytes=-10": (990, 1000),
             "bytes=990-5000": (990, 1000), "bytes=0-0": (0, 1), "bytes=-5000": (0, 1000)}
    for header, (start, end) in cases.items():
        reply = await download(trio, ana, blob, header)
        assert reply.status == 206, header
        assert reply.headers["Content-Range"] == f"bytes {start}-{end - 1}/1000", header
        assert reply.headers["Content-Length"] == str(end - start)
        assert reply.body == data[start:end], header

    for header in ("bytes=1000-", "bytes=5-3", "items=0-1", "bytes=0-1,5-6", "bytes=-0",
                   "bytes=", "bytes=a-b", "bytes=" + "9" * 30 + "-"):
        reply = await download(trio, ana, blob, header)
        assert (reply.status, reply.error) == (416, "bad-range"), header
        assert reply.headers["Content-Range"] == "bytes */1000"


async def test_only_owner_and_recipients_download(trio):
    ana, bob, carol = members(trio)
    plaintext = b"exhibit 12: ledger of transfers " * 100
    entry = await trio.attach(ana, plaintext)
    blob = entry["blob"]
    assert (await download(trio, bob, blob)).status == 404         # not yet attached to anything

    envelope, _ = await trio.send(ana, ["bob"], "see attachment", manifest=[entry])
    assert envelope["blobs"] == [blob]
    reply = await download(trio, bob, blob)
    assert reply.status == 200
    out = io.BytesIO()
    decrypt_stream(b64d(entry["key"]), io.BytesIO(reply.body), out, b64d(entry["hash"]))
    assert out.getvalue() == plaintext
    assert (await download(trio, ana, blob)).status == 200
    reply = await download(trio, carol, blob)
    assert (reply.status, reply.error) == (404, "no-blob")
    assert (await head(trio, bob, blob)).status == 404              # upload state is the owner's

    # Once the message is collected the blob goes with it.
    await trio.relay.get(f"{trio.path}/messages/{envelope['id']}", member=bob)
    await trio.relay.post(f"{trio.path}/messages/{envelope['id']}/collected", member=bob)
    assert (await download(trio, bob, blob)).status in (404, 410)
    assert (await trio.relay.sweep())["blobs"] == 1
    assert not (trio.relay.data_dir / "blobs" / blob).exists()


async def test_blob_rules_at_submit(trio):
    ana, bob, _ = members(trio)
    entry = await trio.attach(ana, b"one")
    # A blob someone else uploaded.
    theirs = await trio.attach(bob, b"two")
    envelope, _ = trio.seal(ana, ["bob"], manifest=[theirs])
    reply = await trio.submit(ana, envelope)
    assert (reply.status, reply.error) == (409, "blob-in-use")
    # An incomplete blob.
    partial = (await create(trio, ana, 100)).json()["blob"]
    envelope, _ = trio.seal(ana, ["bob"], manifest=[{**entry, "blob": partial}])
    assert (await trio.submit(ana, envelope)).error == "blob-in-use"
    # A blob that does not exist.
    envelope, _ = trio.seal(ana, ["bob"], manifest=[{**entry, "blob": "A" * 22}])
    assert (await trio.submit(ana, envelope)).status == 404
    assert (await trio.relay.table_counts())["messages"] == 0
    # One blob, one message.
    await trio.send(ana, ["bob"], manifest=[entry])
    envelope, _ = trio.seal(ana, ["bob"], manifest=[entry])
    assert (await trio.submit(ana, envelope)).error == "blob-in-use"


async def test_blob_of_another_network_is_not_found(relay):
    refco = await create_network(relay, "refco")
    sahel = await create_network(relay, "sahel", admin="moussa")
    blob = await refco.upload(refco.admin, b"data")
    assert (await download(sahel, sahel.admin, blob)).status == 404
    assert (await head(sahel, sahel.admin, blob)).status == 404


@pytest.mark.parametrize("blob_id", ["..%2F..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "a/b", "..",
                                     "%2e%2e", "..%2Frelay.db", "A" * 21 + ".", "A" * 200,
                                     "%00" + "A" * 21, "etc"])
async def test_path_like_blob_ids_touch_nothing(trio, blob_id):
    ana, _, _ = members(trio)
    blob = await trio.upload(ana, b"legit")
    sentinel = trio.relay.data_dir.parent / "etc"
    sentinel.write_bytes(b"untouched")
    before = trio.relay.files()
    for method in ("GET", "HEAD", "PATCH"):
        reply = await trio.relay.request(method, f"{trio.path}/blobs/{blob_id}", member=ana,
                                         data=b"evil", headers={"Upload-Offset": "0"})
        assert reply.status == 404, (method, reply)
        if method != "HEAD":
            assert reply.json()["error"] in ("no-blob", "not-found")
    assert trio.relay.files() == before
    assert sentinel.read_bytes() == b"untouched"
    assert (await download(trio, ana, blob)).body == b"legit"


# -- cleanup ---------------------------------------------------------------------------------------

async def test_orphan_blobs_collected_after_their_ttl(trio):
    ana, _, _ = members(trio)
    complete = await trio.upload(ana, b"never sent")
    partial = (await create(trio, ana, 100)).json()["blob"]
    assert (await trio.patch_blob(ana, partial, 0, b"half")).status == 204
    linked = await trio.attach(ana, b"sent")
    await trio.send(ana, ["bob"], manifest=[linked])
    folder = trio.relay.data_dir / "blobs"

    assert (await trio.relay.sweep())["blobs"] == 0
    await trio.advance(ORPHAN_BLOB_TTL - MINUTE)
    assert (await trio.relay.sweep())["blobs"] == 0
    await trio.advance(2 * MINUTE)
    assert (await trio.relay.sweep())["blobs"] == 2
    assert sorted(p.name for p in folder.iterdir()) == [linked["blob"]]
    for blob in (complete, partial):
        assert (await head(trio, ana, blob)).status == 404
    assert (await trio.relay.table_counts())["blobs"] == 1
