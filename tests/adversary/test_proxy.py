"""The malicious-relay fixture itself: it forwards, rewrites, answers in the relay's place and
pushes events, so that the attack tests beside it can rely on it."""

from __future__ import annotations

import json

from keys.receipts import verify_relay_receipt

from .conftest import build_network


def test_the_proxy_forwards_rewrites_and_intercepts(malicious_relay, tmp_path):
    mal = malicious_relay
    people = build_network(mal, tmp_path, "secretariat", ["alice"])
    assert ("POST", "/v1/networks", 201) in mal.seen     # network create went through the proxy
    listed = people["alice"].json("members", "--network", "refco")
    assert [m["handle"] for m in listed] == ["alice", "secretariat"]

    def hide_members(status, body, req):
        return 503, json.dumps({"error": "unavailable", "message": "rewritten by the test"}).encode()
    mal.rewrite("GET", r"/log\?", hide_members)
    refused = people["alice"].run("members", "--network", "refco", ok=False)
    assert refused.status != 0 and "rewritten by the test" in refused.stderr

    mal.clear()
    mal.on_request("GET", r"/v1/relay$", lambda req: (200, json.dumps({"relay_key": "x"}).encode()))
    refused = people["alice"].run("members", "--network", "refco", ok=False)
    assert "presents no valid relay key" in refused.stderr


def test_the_proxy_signs_as_the_relay(malicious_relay):
    from keys.receipts import make_relay_receipt
    receipt = make_relay_receipt(malicious_relay.key, "submission-accepted", network=b"\0" * 32,
                                 message_id="A" * 22, envelope_hash=b"\1" * 32, sender="alice",
                                 time=1, recipients=["bob"])
    assert verify_relay_receipt(receipt, malicious_relay.key.public)
