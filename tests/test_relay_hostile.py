"""Hostile input: every refusal is a 4xx with a JSON ``{"error", "message"}`` and changes nothing.

Each case snapshots what the relay holds (rows of every table, the blob
files) before and after, so "nothing stored" is checked, not assumed. A
hypothesis test throws random JSON-ish bodies at every POST route.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.encoding import b64e
from relay.auth import RateLimiter
from relay.errors import CATALOGUE
from relay.routes import ROUTES
from tests.relay_helpers import create_network, start_relay


# One relay for the whole module: every case must leave it unchanged anyway, so sharing it
# also checks that refusals do not add up to damage.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    """refco with ana and bob, one message from ana to bob, one attachment blob of ana's."""
    async with start_relay(tmp_path_factory.mktemp("hostile") / "relay") as relay:
        network = await create_network(relay)
        bob = await network.add_member("bob")
        envelope, _ = await network.send(network.admin, ["bob"])
        blob = await network.upload(network.admin, b"attachment bytes")
        # Unauthenticated routes have a per-address budget; all this fuzzing is one address.
        relay.state.anon_limiter = RateLimiter(10 ** 9, 10 ** 9)
        relay.state.member_limiter = RateLimiter(10 ** 9, 10 ** 9)
        yield {"network": network, "ana": network.admin, "bob": bob, "envelope": envelope,
               "message": envelope["id"], "blob": blob}


async def snapshot(relay) -> tuple:
    """What the relay holds: rows per table (audit apart) and the blob files with sizes."""
    counts = await relay.table_counts()
    audit = counts.pop("audit")
    folder = relay.data_dir / "blobs"
    files = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
    return counts, files, audit


def check_refusal(reply) -> str:
    """A 4xx whose body is exactly {"error", "message"} with a catalogued code and status."""
    assert 400 <= reply.status < 500, reply
    assert reply.headers["Content-Type"].startswith("application/json"), reply
    body = reply.json()
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] in CATALOGUE, body
    assert CATALOGUE[body["error"]][0] == reply.status, body
    return body["error"]


async def refused(relay, method, path, *, expect: str | None = None, **kw) -> str:
    before = await snapshot(relay)
    reply = await relay.request(method, path, **kw)
    code = check_refusal(reply)
    if expect is not None:
        assert code == expect, reply
    after = await snapshot(relay)
    assert after[:2] == before[:2], (method, path)
    return code


JSON = {"Content-Type": "application/json"}


# -- bodies that are not JSON objects -------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"{bad", b'{"envelope": ', b"", b"[]", b'"text"', b"null", b'{"envelope": 1.5}',
    b'{"envelope": NaN}', b'{"envelope": Infinity}', b'{"a": 1, "a": 2}', b"\xff\xfe{}",
    b'{"envelope": "\\ud800"}', b'{"envelope": 9007199254740993}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"envelope": ' + b'{"a": ' * 40 + b"1" + b"}" * 41,
], ids=lambda raw: repr(raw[:20]))
async def test_malformed_json(world, raw):
    network = world["network"]
    code = await refused(network.relay, "POST", network.path + "/messages", data=raw,
                         headers=JSON, member=world["ana"])
    assert code in ("bad-json", "bad-request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
async def test_wrong_content_type(world, content_type):
    network = world["network"]
    body = json.dumps({"envelope": world["envelope"]}).encode()
    await refused(network.relay, "POST", network.path + "/messages", data=body,
                  headers={"Content-Type": content_type}, member=world["ana"],
                  expect="unsupported-media-type")


async def test_missing_content_type(world):
    network = world["network"]
    await refused(network.relay, "POST", network.path + "/auth/challenge", data=b'{"handle":"ana"}',
                  expect="unsupported-media-type")


# -- well-formed JSON with the wrong content ------------------------------------------------------

def _envelope_with(world, **changes) -> dict:
    envelope = copy.deepcopy(world["envelope"])
    for key, value in changes.items():
        envelope[key] = value
    return {"envelope": envelope}


CASES = {
    # wrong types
    "envelope-string": ("/messages", lambda w: {"envelope": "x"}, True),
    "envelope-list": ("/messages", lambda w: {"envelope": []}, True),
    "recipients-string": ("/messages", lambda w: _envelope_with(w, recipients="bob"), True),
    "created-string": ("/messages", lambda w: _envelope_with(w, created="now"), True),
    "v-bool": ("/messages", lambda w: _envelope_with(w, v=True), True),
    "wrapped-list": ("/messages", lambda w: _envelope_with(w, wrapped=[]), True),
    "size-string": ("/blobs", lambda w: {"size": "10"}, True),
    "size-negative": ("/blobs", lambda w: {"size": -1}, True),
    "size-bool": ("/blobs", lambda w: {"size": True}, True),
    "handle-int": ("/auth/challenge", lambda w: {"handle": 5}, False),
    "handle-upper": ("/auth/challenge", lambda w: {"handle": "ANA"}, False),
    "challenge-int": ("/auth/token", lambda w: {"handle": "ana", "challenge": 5, "signature": 5},
                      False),
    "invite-id-int": ("/invites", lambda w: {"invite_id": 5, "handle": "carol", "role": "member"},
                      True),
    "role-list": ("/invites", lambda w: {"invite_id": b64e(os.urandom(32)), "handle": "carol",
                                         "role": ["admin"]}, True),
    "expires-string": ("/invites", lambda w: {"invite_id": b64e(os.urandom(32)), "handle": "carol",
                                              "role": "member", "expires": "soon"}, True),
    "request-string": ("/enrollments", lambda w: {"request": "x"}, False),
    "entry-int": ("/log", lambda w: {"entry": 5}, True),
    "entry-seq-string": ("/log", lambda w: {"entry": {**w["network"].entries[-1], "seq": "2"}},
                         True),
    # missing and unknown fields
    "missing-envelope": ("/messages", lambda w: {}, True),
    "extra-top-level": ("/messages", lambda w: {"envelope": w["envelope"], "extra": 1}, True),
    "extra-in-envelope": ("/messages", lambda w: _envelope_with(w, extra=1), True),
    "extra-in-wrap": ("/messages", lambda w: _envelope_with(w, wrapped={"bob": {
        **w["envelope"]["wrapped"]["bob"], "hint": "x"}}), True),
    "extra-in-entry": ("/log", lambda w: {"entry": {**w["network"].entries[-1], "note": "x"}},
                       True),
    "extra-challenge": ("/auth/challenge", lambda w: {"handle": "ana", "x": 1}, False),
    "extra-size": ("/blobs", lambda w: {"size": 1, "name": "a.pdf"}, True),
    # bad base64
    "nonce-not-b64": ("/messages", lambda w: _envelope_with(w, nonce="!!!"), True),
    "ciphertext-padded": ("/messages", lambda w: _envelope_with(
        w, ciphertext=w["envelope"]["ciphertext"] + "="), True),
    "id-std-alphabet": ("/messages", lambda w: _envelope_with(w, id="ab+/" * 5 + "ab"), True),
    "sealed-not-b64": ("/messages", lambda w: _envelope_with(w, wrapped={"bob": {
        "key_version": 1, "sealed": "%%%"}}), True),
    "challenge-not-b64": ("/auth/token", lambda w: {"handle": "ana", "challenge": "not base64!",
                                                     "signature": "x"}, False),
    "invite-id-not-b64": ("/invites", lambda w: {"invite_id": "abc+/=" * 4, "handle": "carol",
                                                 "role": "member"}, True),
    "enrollment-bad-mac": ("/enrollments", lambda w: {"request": {
        "invite_id": b64e(os.urandom(32)), "network": b64e(w["network"].genesis_hash),
        "handle": "carol", "identity_key": w["ana"].identity.public.b64(),
        "encryption_key": w["ana"].key_record, "mac": "***"}}, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_wrong_content(world, case):
    route, make, with_token = CASES[case]
    network = world["network"]
    await refused(network.relay, "POST", network.path + route, json_body=make(world),
                  member=world["ana"] if with_token else None)


async def test_create_network_with_garbage(world):
    relay = world["network"].relay
    for body in ({"token": 5, "genesis": 5}, {"token": "t" * 32, "genesis": {"kind": "genesis"}},
                 {"token": "t" * 32}, {"genesis": {}}, {"token": "t" * 32, "genesis": [],
                                                        "admin": "me"}):
        await refused(relay, "POST", "/v1/networks", json_body=body)


# -- size -----------------------------------------------------------------------------------------

async def test_huge_body_refused(world):
    network = world["network"]
    limit = network.relay.state.settings.max_json_body
    body = b'{"envelope": "' + b"A" * limit + b'"}'
    await refused(network.relay, "POST", network.path + "/messages", data=body, headers=JSON,
                  member=world["ana"], expect="too-large")


async def test_huge_chunked_body_refused(world):
    """No Content-Length: the relay counts as it reads and stops at the cap."""
    network = world["network"]
    limit = network.relay.state.settings.max_json_body

    async def stream():
        yield b'{"envelope": "'
        for _ in range(limit // 65536 + 2):
            yield b"A" * 65536
        yield b'"}'
    await refused(network.relay, "POST", network.path + "/messages", data=stream(), headers=JSON,
                  member=world["ana"], expect="too-large")


async def test_truncated_body(world):
    """The client promises more than it sends and closes its side: nothing is stored."""
    network = world["network"]
    relay = network.relay
    before = await snapshot(relay)
    body = json.dumps({"envelope": world["envelope"]}).encode()
    reader, writer = await asyncio.open_connection(relay.server.host, relay.server.port)
    writer.write((f"POST {network.path}/messages HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {world['ana'].token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                  ).encode() + body[: len(body) // 2])
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    # The relay may have nobody left to answer; if it answers, it is a refusal, never a 5xx.
    assert answer == b"" or answer.split(b" ")[1].startswith(b"4"), answer[:100]
    assert (await snapshot(relay))[:2] == before[:2]
    assert (await relay.get("/healthz")).status == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-unknown"])
async def test_undecodable_body(world, encoding):
    network = world["network"]
    await refused(network.relay, "POST", network.path + "/messages", data=b"0123456789",
                  headers={**JSON, "Content-Encoding": encoding}, member=world["ana"])


@pytest.mark.parametrize("head", [
    "Content-Encoding: br",                              # no decoder installed
    "Transfer-Encoding: chunked\r\n\r\nzz",           # broken chunk framing
    "X-Filler: " + "a" * 10_000,                         # a header line over the limit
])
async def test_broken_http_framing(world, head):
    """Refused by the HTTP layer before the app sees the request: a 400 (plain text, the one
    exception to JSON errors, see docs/relay-api.md), never a 5xx, nothing stored."""
    network = world["network"]
    relay = network.relay
    before = await snapshot(relay)
    reader, writer = await asyncio.open_connection(relay.server.host, relay.server.port)
    writer.write((f"POST {network.path}/messages HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {world['ana'].token}\r\n"
                  f"Content-Type: application/json\r\nConnection: close\r\n{head}\r\n\r\n"
                  ).encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.split(b" ")[1] == b"400", answer[:200]
    assert (await snapshot(relay))[:2] == before[:2]


# -- routes, methods, query strings, ids ----------------------------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/v2/networks", "/v1/networks/refco",
                                  "/v1/networks/refco/nope", "/v1/networks/refco/log/extra",
                                  "/v1/networks/refco/messages/a/b", "/%2e%2e/%2e%2e/etc/passwd"])
async def test_unknown_routes(world, path):
    await refused(world["network"].relay, "GET", path, member=world["ana"], expect="not-found")


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/networks"), ("PUT", "/v1/networks"), ("DELETE", "/v1/networks/refco/log"),
    ("DELETE", "/v1/networks/refco/messages/{message}"), ("PUT", "/v1/networks/refco/blobs/{blob}"),
    ("POST", "/healthz"), ("PATCH", "/v1/networks/refco/messages"),
])
async def test_wrong_methods(world, method, path):
    path = path.format(message=world["message"], blob=world["blob"])
    relay = world["network"].relay
    await refused(relay, method, path, member=world["ana"], expect="method-not-allowed")
    reply = await relay.request(method, path, member=world["ana"])
    assert reply.headers.get("Allow")


@pytest.mark.parametrize("query", ["/log?since=x", "/log?since=1.0", "/log?limit=0x10",
                                   "/log?limit=-5", "/log?since=%ff", "/mailbox?after=1e3",
                                   "/mailbox?limit=", "/mailbox?after=" + "1" * 40])
async def test_non_integer_query_parameters(world, query):
    network = world["network"]
    await refused(network.relay, "GET", network.path + query, member=world["ana"],
                  expect="bad-request")


@pytest.mark.parametrize("path", [
    "/v1/networks/..%2F..%2Fetc/log", "/v1/networks/refco%2F..%2Fsahel/log",
    "/v1/networks/refco/messages/..%2F..%2Fetc", "/v1/networks/refco/messages/..%2Frelay.db",
    "/v1/networks/refco/messages/%2e%2e", "/v1/networks/refco/blobs/..%2F..%2Fetc",
    "/v1/networks/refco/blobs/..%2Frelay.key", "/v1/networks/refco/messages/{message}%00",
])
async def test_path_traversal_ids(world, path):
    path = path.format(message=world["message"])
    relay = world["network"].relay
    before = relay.files()
    code = await refused(relay, "GET", path, member=world["ana"])
    assert code in ("not-found", "no-network", "no-message", "no-blob")
    assert relay.files().keys() == before.keys()


# -- random bodies at every POST route ------------------------------------------------------------

FIELD_NAMES = sorted({name for route in ROUTES for name in route.body + route.optional}
                     | {"kind", "seq", "prev", "body", "signatures", "recipients", "id", "v"})

json_leaves = (st.none() | st.booleans() | st.integers(-(2 ** 64), 2 ** 64)
               | st.text(max_size=40) | st.sampled_from(["ana", "bob", "refco", "A" * 43]))
json_values = st.recursive(
    json_leaves,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner,
                                     max_size=5)),
    max_leaves=25)


def route_bodies(route) -> st.SearchStrategy[bytes]:
    shaped = st.fixed_dictionaries({name: json_values for name in route.body},
                                   optional={name: json_values for name in route.optional})
    return st.one_of(
        shaped.map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=120),
        st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


POST_ROUTES = [r for r in ROUTES if r.method in ("POST", "PATCH")]


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                   HealthCheck.too_slow])
@given(data=st.data())
async def test_random_bodies_never_break_the_relay(world, data):
    route = data.draw(st.sampled_from(POST_ROUTES), label="route")
    relay = world["network"].relay
    path = route.path.format(network=data.draw(st.sampled_from(["refco", "refco", "nowhere"])),
                             id=data.draw(st.sampled_from([world["message"], world["blob"],
                                                           "x" * 22])))
    body = data.draw(route_bodies(route), label="body")
    headers = {"Content-Type": data.draw(st.sampled_from(
        ["application/json", "application/json", "application/offset+octet-stream",
         "text/plain"]))}
    if route.method == "PATCH":
        headers["Upload-Offset"] = data.draw(st.sampled_from(["0", "16", "x", "99999"]))
    member = data.draw(st.sampled_from([world["ana"], world["bob"], None]), label="member")

    before = await snapshot(relay)
    reply = await relay.request(route.method, path, data=body, headers=headers, member=member)
    assert reply.status < 500, reply
    if reply.status >= 400:
        check_refusal(reply)
        assert (await snapshot(relay))[:2] == before[:2], reply


async def test_the_relay_still_works_after_all_this(world):
    network = world["network"]
    relay = network.relay
    assert (await relay.get("/healthz")).status == 200
    envelope, _ = await network.send(world["ana"], ["bob"], "still here")
    reply = await relay.get(f"{network.path}/messages/{envelope['id']}", member=world["bob"])
    assert network.open(world["bob"], reply.json()["envelope"]).body == "still here"
