"""relay/cluster.py within one process: two Cluster ends wired as two workers would be."""

from __future__ import annotations

import asyncio
import logging

import pytest

from relay import cluster as cluster_module
from relay.cluster import Cluster


@pytest.fixture
async def pair():
    clusters = Cluster.create(2)
    yield clusters
    for c in clusters:
        c.stop()
        for sock in c.sockets():
            sock.close()


def test_a_single_process_is_its_own_primary_and_keeps_an_epoch():
    alone = Cluster.single()
    assert alone.primary and alone.size == 1
    before = alone.log_epoch()
    alone.bump_log_epoch()
    assert alone.log_epoch() != before


async def test_each_worker_sees_the_epoch_bumped_by_another(pair):
    first, second = pair
    seen = second.log_epoch()
    first.bump_log_epoch()
    assert second.log_epoch() != seen and second.log_epoch() == first.log_epoch()
    seen = first.log_epoch()
    second.bump_log_epoch()
    assert first.log_epoch() != seen


async def test_broadcast_reaches_the_sibling_in_order_in_one_loop_turn(pair):
    first, second = pair
    received: list[dict] = []
    got = asyncio.Event()

    def on_push(message: dict) -> None:
        received.append(message)
        if len(received) == 3:
            got.set()
    first.start({"push": lambda m: None})
    second.start({"push": on_push})
    for n in range(3):
        first.broadcast({"kind": "push", "n": n})
    await asyncio.wait_for(got.wait(), 5)
    assert [m["n"] for m in received] == [0, 1, 2]


async def test_many_events_split_into_datagrams_within_the_size_limit(pair, monkeypatch):
    monkeypatch.setattr(cluster_module, "MAX_DATAGRAM", 200)
    first, second = pair
    received: list[dict] = []
    done = asyncio.Event()

    def on_push(message: dict) -> None:
        received.append(message)
        if len(received) == 50:
            done.set()
    first.start({})
    second.start({"push": on_push})
    for n in range(50):
        first.broadcast({"kind": "push", "n": n, "pad": "x" * 40})
    await asyncio.wait_for(done.wait(), 5)
    assert [m["n"] for m in received] == list(range(50))


async def test_gather_collects_every_worker_answer(pair):
    first, second = pair
    first.start({"metrics": lambda request: first.answer(request, "first")})
    second.start({"metrics": lambda request: second.answer(request, "second")})
    assert await first.gather("metrics", "mine") == ["mine", "second"]
    assert await second.gather("metrics", "mine") == ["mine", "first"]


async def test_gather_gives_up_on_a_silent_sibling(pair, monkeypatch, caplog):
    monkeypatch.setattr(cluster_module, "GATHER_TIMEOUT", 0.05)
    first, second = pair
    first.start({})
    second.start({"metrics": lambda request: None})       # never answers
    with caplog.at_level(logging.WARNING, logger="comity.relay"):
        assert await first.gather("metrics", "mine") == ["mine"]
    assert "did not answer" in caplog.text


async def test_an_unreadable_or_unknown_message_is_logged_and_skipped(pair, caplog):
    first, second = pair
    received: list[dict] = []
    got = asyncio.Event()
    second.start({"push": lambda m: (received.append(m), got.set())})
    first.start({})
    with caplog.at_level(logging.ERROR, logger="comity.relay"):
        first._peers[1].send(b"not json")
        first.broadcast({"kind": "no-such-kind"})
        first.broadcast({"kind": "push", "ok": True})
        await asyncio.wait_for(got.wait(), 5)
    assert received == [{"kind": "push", "ok": True}]
    assert "unreadable message" in caplog.text and "unknown message" in caplog.text


async def test_a_full_inbox_queues_events_until_the_sibling_reads(monkeypatch):
    monkeypatch.setattr(cluster_module, "SOCKET_BUFFER", 8192)   # full after a few datagrams
    first, second = clusters = Cluster.create(2)
    first.start({})
    count = 3000                      # more datagrams than a Unix socket queues unread
    for n in range(count):
        first.broadcast({"kind": "push", "n": n})
        await asyncio.sleep(0)        # one loop turn: one datagram each
    assert first._backlog, "the inbox never filled: the test proves nothing"
    received: list[int] = []
    done = asyncio.Event()

    def on_push(message: dict) -> None:
        received.append(message["n"])
        if len(received) == count:
            done.set()
    second.start({"push": on_push})
    await asyncio.wait_for(done.wait(), 10)
    assert received == list(range(count)) and not first._backlog
    for c in clusters:
        c.stop()
        for sock in c.sockets():
            sock.close()
