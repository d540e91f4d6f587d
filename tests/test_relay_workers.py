"""``comity-relay serve --workers 2``: one relay, two processes, one set of rules.

Each test pins HTTP connections to a known worker (``/healthz`` names the
worker that answered; a session with one connection keeps talking to it) and
checks that what one worker does, the other knows at once: a challenge issued
by one is redeemed at the other, once; a member removed through one is refused
by the other on the very next request; an event published by one reaches a
WebSocket held by the other; ``/metrics`` counts both. Then the process
management: SIGTERM stops both and exits 0, a killed worker is replaced, and
workers whose supervisor was killed drain and release the data folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal

import aiohttp
import pytest

from keys.encoding import b64d
from keys.log import make_entry
from relay.auth import AUTH_PURPOSE, auth_statement

from .relay_helpers import until
from .relay_process_support import START_TIMEOUT, Network, RelayProcess, mint_token, relay_key_of

WORKERS = 2
#: fresh connections tried before giving up on reaching every worker (each one lands on a
#: given worker with probability 1/2: 64 misses in a row do not happen)
PIN_ATTEMPTS = 64


@pytest.fixture
def relays():
    started: list[RelayProcess] = []

    def start(data_dir, *args: str) -> RelayProcess:
        relay = RelayProcess(data_dir, "--workers", str(WORKERS), *args)
        started.append(relay)
        return relay.wait_ready()

    yield start
    for relay in started:
        relay.close()


@contextlib.asynccontextmanager
async def pinned(url: str):
    """``{worker index: session}``: a session per worker, each on one kept-alive connection."""
    sessions: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    try:
        for _ in range(PIN_ATTEMPTS):
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with session.get(f"{url}/healthz") as r:
                worker = (await r.json())["worker"]
            if worker in sessions:
                spare.append(session)
            else:
                sessions[worker] = session
            if len(sessions) == WORKERS:
                break
        assert sorted(sessions) == list(range(WORKERS)), "could not reach every worker"
        for session in spare:
            await session.close()
        spare.clear()
        yield sessions
    finally:
        for session in [*sessions.values(), *spare]:
            await session.close()


async def _worker_of(session, url) -> int:
    async with session.get(f"{url}/healthz") as r:
        return (await r.json())["worker"]


async def _created(relay, data, *members: str) -> Network:
    network = Network("workers-net", "ana", *members, relay_key=relay_key_of(data))
    async with aiohttp.ClientSession() as session:
        await network.create(session, relay.url, mint_token(data, network.name))
    return network


async def test_workers_share_the_port_and_both_stop_on_sigterm(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    assert relay.stdout.lines[:2] == [f"listening on {relay.url}",
                                      f"relay fingerprint {relay.fingerprint}"]
    workers = relay.workers()
    assert len(workers) == WORKERS
    async with pinned(relay.url) as sessions:
        for index, session in sessions.items():
            assert await _worker_of(session, relay.url) == index   # the connection stays put
    # The supervisor holds the data folder: a second relay on it is refused.
    second = RelayProcess(data)
    assert second.wait_exit() == 1
    assert "another comity-relay is already using" in second.stderr.text
    relay.signal(signal.SIGTERM)
    assert relay.wait_exit() == 0
    assert not [pid for pid in workers if _alive(pid)]
    assert "Traceback" not in relay.stderr.text


async def test_a_challenge_from_one_worker_is_redeemed_at_the_other_once(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    network = await _created(relay, data, "bob")
    bob = network.people["bob"]
    async with pinned(relay.url) as sessions:
        base = f"{relay.url}/v1/networks/{network.name}"
        async with sessions[0].get(f"{relay.url}/v1/relay") as r:
            relay_key = b64d((await r.json())["relay_key"])
        async with sessions[0].post(f"{base}/auth/challenge", json={"handle": "bob"}) as r:
            assert r.status == 200
            challenge = (await r.json())["challenge"]
        statement = auth_statement(b64d(challenge), "bob", network.genesis_hash, relay_key)
        answer = {"handle": "bob", "challenge": challenge,
                  "signature": bob.identity.sign_b64(AUTH_PURPOSE, statement)}
        async with sessions[1].post(f"{base}/auth/token", json=answer) as r:
            assert r.status == 200, await r.text()
            token = (await r.json())["token"]
        # Used once: the worker that issued it refuses it now.
        async with sessions[0].post(f"{base}/auth/token", json=answer) as r:
            assert r.status == 401 and (await r.json())["error"] == "bad-challenge"
        # The token works at both workers (one token secret).
        for session in sessions.values():
            async with session.get(f"{base}/mailbox",
                                   headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, await r.text()


async def test_a_member_removed_through_one_worker_is_refused_by_the_other_at_once(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    network = await _created(relay, data, "bob", "carol")
    async with pinned(relay.url) as sessions:
        base = f"{relay.url}/v1/networks/{network.name}"
        for handle in ("ana", "bob"):
            await network.login(sessions[1], relay.url, handle)
        bob = network.people["bob"].auth
        async with sessions[1].get(f"{base}/mailbox", headers=bob) as r:
            assert r.status == 200               # worker 1 has the log cached, bob in it
        removal = make_entry(network.entries[-1], len(network.entries), "remove-member",
                             {"handle": "bob"}, network.now, [network.admin.identity])
        async with sessions[0].post(f"{base}/log", json={"entry": removal},
                                    headers=network.admin.auth) as r:
            assert r.status == 201, await r.text()
        network.entries.append(removal)
        async with sessions[1].get(f"{base}/mailbox", headers=bob) as r:
            assert r.status == 403 and (await r.json())["error"] == "not-a-member"
        # Worker 1 caught up on the log: the next entry, appended there, follows the removal.
        role = make_entry(removal, len(network.entries), "set-role",
                          {"handle": "carol", "role": "admin"}, network.now,
                          [network.admin.identity])
        async with sessions[1].post(f"{base}/log", json={"entry": role},
                                    headers=network.admin.auth) as r:
            assert r.status == 201, await r.text()
        # And worker 0 serves the log with worker 1's entry at its head.
        async with sessions[0].get(f"{base}/log", params={"since": "0"},
                                   headers=network.admin.auth) as r:
            assert r.status == 200, await r.text()
            head = (await r.json())["head"]
        assert head["seq"] == len(network.entries)


async def test_an_event_published_by_one_worker_reaches_a_socket_held_by_the_other(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    network = await _created(relay, data, "bob")
    async with pinned(relay.url) as sessions:
        base = f"{relay.url}/v1/networks/{network.name}"
        await network.login(sessions[0], relay.url, "ana")
        await network.login(sessions[1], relay.url, "bob")
        # The socket takes worker 1's kept-alive connection (the session has only that one).
        async with sessions[1].ws_connect(f"{base}/events",
                                          headers=network.people["bob"].auth) as ws:
            hello = json.loads((await ws.receive(timeout=START_TIMEOUT)).data)
            assert hello["type"] == "hello"
            envelope = network.seal("ana", ["bob"], "across workers")
            async with sessions[0].post(f"{base}/messages", json={"envelope": envelope},
                                        headers=network.admin.auth) as r:
                assert r.status == 201, await r.text()
            event = json.loads((await ws.receive(timeout=START_TIMEOUT)).data)
            assert event == {"type": "message", "id": envelope["id"], "sender": "ana"}


async def test_metrics_count_the_requests_of_every_worker(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    async with pinned(relay.url) as sessions:
        for session in sessions.values():
            for _ in range(3):
                await _worker_of(session, relay.url)
        # Each worker answered 3 pinned requests, plus the pinning ones: count them all.
        async with sessions[0].get(f"{relay.url}/metrics") as r:
            text = await r.text()
    assert re.search(r"^comity_workers_reporting 2$", text, re.M), text
    match = re.search(r'^comity_requests_total\{method="GET",route="/healthz",status="200"\} (\d+)$',
                      text, re.M)
    assert match and int(match.group(1)) >= 2 * 4, text


async def test_a_killed_worker_is_replaced_and_the_relay_keeps_serving(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    network = await _created(relay, data, "bob")
    before = set(relay.workers())
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    assert relay.stderr.wait_for(r"worker \d exited unexpectedly", START_TIMEOUT), relay.output()
    await until(lambda: len(set(relay.workers()) - before) == 1, "a new worker started",
                START_TIMEOUT)
    async with pinned(relay.url) as sessions:      # both workers answer again
        for session in sessions.values():
            await network.login(session, relay.url, "bob")
    relay.signal(signal.SIGTERM)
    assert relay.wait_exit() == 0


async def test_workers_of_a_killed_supervisor_drain_and_free_the_data_folder(relays, tmp_path):
    data = tmp_path / "data"
    relay = relays(data)
    workers = relay.workers()
    os.kill(relay.pid, signal.SIGKILL)
    relay.proc.wait(START_TIMEOUT)
    await until(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers exited",
                START_TIMEOUT)
    again = relays(data)                           # the folder lock was released
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{again.url}/healthz") as r:
            assert r.status == 200


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
