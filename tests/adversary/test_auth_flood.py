"""Attack: lock a member out by flooding the relay's authentication for the member's handle.

The attacker needs nothing: no key, no token, no invitation. From the member's own client
address it asks for thousands of challenges naming the victim's handle and sends token
requests with wrong signatures. When the relay stored each challenge and capped them per
handle, sixteen requests every two minutes kept the member out (`429 rate-limited`).
An eavesdropper who saw a member's signed token request could also try to send it again.

Defence (relay/auth.py): a challenge is derived, not stored: the issue time, a random nonce
and an HMAC under the relay's secret over network, handle, time and nonce. Issuing one writes
nothing and spends no per-address budget; the relay checks the MAC and the age when the
signature comes back, and remembers a challenge only once a member's valid signature has used
it (`used_challenges`), so that only members write that state and a replay is refused. Only a
*failed* token request spends the anonymous per-address budget: a valid signature is never
refused for a flood from its address.

What the user is told: nothing unusual; `comity members` works during the flood. The replayed
token request gets `401 bad-challenge` and an `auth-failed` audit record.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e_support import COMMAND_TIMEOUT, Member, RelayProcess, wait_until

from ._auth_flood_support import Flooder, RecordingProxy

NETWORK = "refco"
#: anonymous requests in the flood (bounded: the test must end on a loaded 2-core box)
FLOOD = 2000
#: the member's command starts once the flood has sent this many challenge requests
FLOOD_BEFORE_MEMBER = 100


@pytest.fixture(scope="module", params=[(), ("--workers", "2")], ids=["one-process", "two-workers"])
def world(request, tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("auth-flood")
    # Two workers share the database, where used challenges are remembered, and the secret
    # that lets one worker check a challenge the other issued.
    relay = RelayProcess(root / "relay", root / "logs", args=request.param)
    proxy = None
    try:
        proxy = RecordingProxy(relay.url)
        ana = Member("ana", root / "homes" / "ana")
        # The member reaches the relay through the eavesdropper's proxy, from 127.0.0.1 like
        # the flood: the relay sees one client address for both.
        ana.run("network", "create", NETWORK, "--relay", proxy.url, "--token", relay.token(NETWORK),
                "--handle", "ana")
        yield relay, proxy, ana
    finally:
        if proxy is not None:
            proxy.close()
        relay.stop()


def _used_challenges(relay: RelayProcess) -> list[tuple[str, str]]:
    with relay.db() as db:
        return db.execute("SELECT network, handle FROM used_challenges").fetchall()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=COMMAND_TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_a_challenge_flood_does_not_lock_the_member_out(world):
    relay, proxy, ana = world
    flooder = Flooder(relay.url, NETWORK, "ana", limit=FLOOD).start()
    try:
        wait_until(lambda: flooder.error or (flooder.drained.is_set()
                                             and flooder.challenges_sent >= FLOOD_BEFORE_MEMBER),
                   COMMAND_TIMEOUT, "the flood to spend the address's budget and get going")
        signed_before = len(proxy.token_requests)
        result = ana.run("members", "--network", NETWORK, "--json", ok=False)
        during_flood = not flooder.stop.is_set() and flooder.challenges_sent < FLOOD
    finally:
        flooder.stop.set()
        flooder.join(COMMAND_TIMEOUT)

    assert result.status == 0, f"the member was locked out:\n{result.stderr}"
    assert [m["handle"] for m in result.json()] == ["ana"]
    # It authenticated afresh, while the flood ran, from the flood's own address.
    assert len(proxy.token_requests) == signed_before + 1
    assert during_flood, "the flood ended before the member's command: raise FLOOD"
    # The flood did spend the address's anonymous budget (its failures were refused with 429)...
    assert flooder.statuses[("token", 429)] > 0, flooder.statuses
    # ...and no challenge request was refused, nor did any leave a trace in the database: the
    # relay remembers only challenges a member's valid signature used.
    assert set(flooder.statuses) <= {("challenge", 200), ("token", 401), ("token", 429)}
    assert _used_challenges(relay) == [(NETWORK, "ana")] * len(proxy.token_requests)


def test_a_replayed_token_request_is_refused(world):
    relay, proxy, ana = world
    ana.run("members", "--network", NETWORK)
    signed = proxy.token_requests[-1]
    status, body = _post(f"{relay.url}/v1/networks/{NETWORK}/auth/token", signed)
    assert (status, body["error"]) == (401, "bad-challenge"), body
    with relay.db() as db:
        event, handle, detail = db.execute(
            "SELECT event, handle, detail FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    assert (event, handle, json.loads(detail)["reason"]) == ("auth-failed", "ana", "bad-challenge")
    # The member is not hurt by the replay: the next command authenticates with a new challenge.
    ana.run("members", "--network", NETWORK)
