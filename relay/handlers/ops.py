"""Operations: /healthz, /metrics, /v1/relay, /v1/openapi.json."""

from __future__ import annotations

from aiohttp import web

from keys.constants import PROTOCOL_VERSION
from keys.identity import format_fingerprint

from ..constants import RETRY_DAMAGED, RETRY_DISK_FULL, RETRY_UNAVAILABLE
from ..db import Unavailable
from ..httputil import json_response
from ..metrics import Metrics
from ..openapi import openapi_document
from ..context import RELAY


async def healthz(request: web.Request) -> web.Response:
    """200 ``ok``; 503 ``draining``, ``damaged`` (a corruption error was seen: writes are
    refused) or ``disk-full`` (until there is room again), each with Retry-After."""
    relay = request.app[RELAY]
    health = relay.store.db.health
    try:
        await relay.store.ping()
    except Unavailable:
        if health.status == "ok":                  # closing, or a failure that is not damage
            raise
    status = "draining" if relay.draining else health.status
    body = {"status": status}
    if status == "damaged":
        body["reason"] = health.damaged
    if relay.cluster.size > 1:
        body["worker"] = relay.cluster.index       # which process answered, for operators
    if status == "ok":
        return json_response(body)
    retry = {"damaged": RETRY_DAMAGED, "disk-full": RETRY_DISK_FULL}.get(status, RETRY_UNAVAILABLE)
    return json_response(body, status=503, headers={"Retry-After": str(retry)})


def worker_metrics(relay) -> dict:
    """What this worker adds to a scrape: its counters and its own gauges."""
    return {"counters": relay.metrics.snapshot(), "queue": relay.store.db.queue_depth(),
            "sockets": relay.hub.connections()}


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    counts = await relay.store.counts()
    workers = await relay.cluster.gather("metrics", worker_metrics(relay))
    total = Metrics()
    for answer in workers:
        total.add(answer["counters"])
    gauges = {
        "comity_messages_stored": counts.messages,
        "comity_message_bytes_stored": counts.message_bytes,
        "comity_blobs_stored": counts.blobs,
        "comity_blob_bytes_stored": counts.blob_bytes,
        "comity_write_queue_depth": sum(answer["queue"] for answer in workers),
        "comity_websocket_connections": sum(answer["sockets"] for answer in workers),
        "comity_workers_reporting": len(workers),
    }
    return web.Response(text=total.render(gauges),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def relay_info(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    held = relay.keys.held(now=True)        # a rotation is visible here at once
    return json_response({
        "relay_key": held[0].public.b64(),
        "fingerprint": format_fingerprint(held[0].public.fingerprint()),
        # Newest first; two during a rotation. Clients believe a key only once a log names it.
        "relay_keys": [key.public.b64() for key in held],
        "protocol": PROTOCOL_VERSION,
    })


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
