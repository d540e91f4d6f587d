"""Operations: health, metrics, the OpenAPI document, the access log, the audit table, and
the promise that no plaintext ever reaches the relay's disk."""

from __future__ import annotations

import json
import logging
import os
import re

from keys.encoding import b64e
from keys.identity import format_fingerprint
from tests.relay_helpers import (authenticate, create_network, relay,  # noqa: F401
                                 sign_challenge, start_relay)


async def test_healthz(relay):
    reply = await relay.get("/healthz")
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


async def test_relay_info(relay):
    reply = await relay.get("/v1/relay")
    body = reply.json()
    assert body["relay_key"] == relay.state.key.public.b64()
    assert body["fingerprint"] == format_fingerprint(relay.state.key.public.fingerprint())
    assert body["protocol"] == 1


#: one Prometheus sample line: name, optional labels, an integer
SAMPLE = r'[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?[0-9]+'


def metric(text: str, name: str, **labels) -> int:
    """The value of one sample in Prometheus text (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    sample = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return int(line.split()[-1])
    return 0


async def test_metrics(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    envelope, _ = await network.send(network.admin, ["bob"], "x" * 500)
    await relay.get(f"{network.path}/messages/{envelope['id']}", member=bob)
    await relay.get("/nope")
    for method in ("PROPFIND", "MKCOL", "LOCK"):       # unusual methods share one label
        await relay.request(method, "/healthz")

    reply = await relay.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.body.decode()
    for name, kind in (("comity_requests_total", "counter"),
                       ("comity_messages_accepted_total", "counter"),
                       ("comity_messages_delivered_total", "counter"),
                       ("comity_bytes_received_total", "counter"),
                       ("comity_bytes_sent_total", "counter"),
                       ("comity_messages_stored", "gauge"),
                       ("comity_write_queue_depth", "gauge"),
                       ("comity_websocket_connections", "gauge")):
        assert f"# TYPE {name} {kind}" in text
        assert f"# HELP {name} " in text
    assert metric(text, "comity_messages_accepted_total") == 1
    assert metric(text, "comity_messages_delivered_total") == 1
    assert metric(text, "comity_messages_stored") == 1
    assert metric(text, "comity_bytes_received_total") >= 500
    assert metric(text, "comity_bytes_sent_total") >= 500
    assert metric(text, "comity_requests_total", method="POST",
                  route="/v1/networks/{network}/messages", status="201") == 1
    assert metric(text, "comity_requests_total", method="GET", route="unmatched",
                  status="404") == 1
    assert metric(text, "comity_requests_total", method="other", route="unmatched",
                  status="405") == 3
    assert "PROPFIND" not in text
    # Every sample line is "name{labels} integer": parseable by Prometheus.
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(SAMPLE, line), line


async def test_openapi_lists_every_route(relay):
    reply = await relay.get("/v1/openapi.json")
    assert reply.status == 200
    document = reply.json()
    assert document["openapi"].startswith("3.")
    described = {(method.upper(), path) for path, ops in document["paths"].items()
                 for method in ops}
    registered = {(route.method, route.resource.canonical) for route in relay.app.router.routes()}
    assert described == registered
    ids = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["description"].startswith("Authentication:")
            assert any(code.startswith("4") for code in op["responses"])
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids))

    def params(method, path):
        return {(p["in"], p["name"]) for p in document["paths"][path][method].get("parameters", [])}
    assert {("query", "since"), ("query", "limit"), ("header", "Comity-Invite")} <= params(
        "get", "/v1/networks/{network}/log")
    assert ("query", "after") in params("get", "/v1/networks/{network}/mailbox")
    assert ("header", "Upload-Offset") in params("patch", "/v1/networks/{network}/blobs/{id}")
    assert ("header", "Range") in params("get", "/v1/networks/{network}/blobs/{id}")


async def test_access_log_has_no_secrets(tmp_path):
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("comity.relay.access")
    handler = Keep()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with start_relay(tmp_path / "relay", access_log=True) as relay:
            network = await create_network(relay)
            ana = network.admin
            secrets = [ana.token]
            # A challenge round of our own, to know the challenge.
            reply = await relay.post(network.path + "/auth/challenge", {"handle": "ana"})
            challenge = reply.json()["challenge"]
            secrets.append(challenge)
            reply = await relay.post(network.path + "/auth/token",
                                     sign_challenge(relay, network, ana, challenge))
            secrets.append(reply.json()["token"])
            ana.token = reply.json()["token"]
            invite = await network.invite("bob")
            secrets += [b64e(invite.invite_id), b64e(invite.secret), invite.to_code()]
            await network.read_log(headers={"Comity-Invite": b64e(invite.invite_id)})
            newcomer, _ = await network.enroll(invite)
            await network.approve(invite, newcomer)
            network.members["bob"] = newcomer
            await authenticate(relay, network, newcomer)
            secrets.append(newcomer.token)
            await network.send(ana, ["bob"])
            await relay.get(network.path + "/mailbox",
                            headers={"Authorization": "Bearer " + "s3cr3t-x" * 4})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    assert len(lines) > 10
    text = "\n".join(lines)
    for secret in secrets + ["s3cr3t-x"]:
        assert secret not in text
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"t", "method", "route", "status", "ms", "member", "peer"}
        assert "?" not in record["route"]
    routes = {json.loads(line)["route"] for line in lines}
    assert "/v1/networks/{network}/auth/token" in routes
    assert any(json.loads(line)["member"] == "refco/ana" for line in lines)


async def test_audit_records_security_events(relay):
    network = await create_network(relay)
    bob = await network.add_member("bob")
    await network.remove("bob")
    reply = await relay.post(network.path + "/auth/challenge", {"handle": "bob"})
    await relay.post(network.path + "/auth/token",
                     sign_challenge(relay, network, bob, reply.json()["challenge"]))

    events = await relay.audit_events()
    kinds = [e[0] for e in events]
    assert kinds == ["network-created", "invite-created", "log-add-member", "log-remove-member",
                     "auth-failed"]
    created, invited, added, removed, failed = events
    assert created[1:3] == ("refco", "ana")
    assert created[3]["genesis_hash"] == b64e(network.genesis_hash)
    assert (added[2], added[3]["subject"], added[3]["seq"]) == ("ana", "bob", 1)
    assert (removed[2], removed[3]["subject"]) == ("ana", "bob")
    assert (failed[2], failed[3]["reason"]) == ("bob", "not-a-member")
    # The table is append-only evidence: nothing in it is a secret.
    assert ana_token_absent(events, network.admin.token)


def ana_token_absent(events, token) -> bool:
    return all(token not in json.dumps(event) for event in events)


async def test_no_plaintext_at_rest(tmp_path):
    marker = os.urandom(6).hex()
    body = f"MLA request {marker}: freeze account 4417 at Banco Central, urgent"
    subject = f"Extradition file {marker}"
    name = f"witness-statement-{marker}.pdf"
    attachment = (f"CONFIDENTIAL WITNESS STATEMENT {marker} ".encode() * 4000)
    needles = [body.encode(), subject.encode(), name.encode(), marker.encode(),
               f"CONFIDENTIAL WITNESS STATEMENT {marker}".encode()]

    async with start_relay(tmp_path / "relay") as relay:
        network = await create_network(relay)
        bob = await network.add_member("bob")
        carol = await network.add_member("carol")
        entry = await network.attach(network.admin, attachment, name=name)
        envelope, _ = await network.send(network.admin, ["bob", "carol"], body,
                                         subject=subject, manifest=[entry])
        await network.send(bob, ["carol"], body, subject=subject)
        # Collected by one recipient, still waiting for the other.
        await relay.get(f"{network.path}/messages/{envelope['id']}", member=bob)
        await relay.post(f"{network.path}/messages/{envelope['id']}/collected", member=bob)
        opened = network.open(carol, (await relay.get(
            f"{network.path}/messages/{envelope['id']}", member=carol)).json()["envelope"])
        assert opened.body == body                     # the plaintext did travel
        running = relay.files()
    stopped = relay.files()

    assert any(p.startswith("blobs/") for p in running)
    assert "relay.db" in stopped
    for files in (running, stopped):
        for path, content in files.items():
            for needle in needles:
                assert needle not in content, f"plaintext found in {path}"


def test_api_doc_names_every_route_and_error_code():
    """docs/relay-api.md is what client authors read: a route or code missing there fails."""
    import pathlib

    from relay.errors import CATALOGUE
    from relay.routes import ROUTES
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "relay-api.md").read_text()
    for route in ROUTES:
        assert f"`{route.method} {route.path}`" in doc, (route.method, route.path)
    for code in CATALOGUE:
        assert f"`{code}`" in doc, code


async def test_a_full_disk_is_a_503_not_a_500(relay, monkeypatch):
    """ENOSPC while writing a blob: the client is told to retry later, nothing is acknowledged."""
    import errno as errno_module
    from relay import blobs as blob_module

    def full(fd, data):
        raise OSError(errno_module.ENOSPC, "No space left on device")
    network = await create_network(relay)
    created = await relay.post(network.path + "/blobs", {"size": 10}, member=network.admin)
    monkeypatch.setattr(blob_module, "_write_all", full)
    reply = await relay.request("PATCH", f"{network.path}/blobs/{created.json()['blob']}",
                                member=network.admin, data=b"x" * 10,
                                headers={"Upload-Offset": "0",
                                         "Content-Type": "application/offset+octet-stream"})
    assert (reply.status, reply.error) == (503, "unavailable")
    assert reply.headers["Retry-After"] == "60"
