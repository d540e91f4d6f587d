"""Operations: /healthz, /metrics, /v1/relay, /v1/openapi.json."""

from __future__ import annotations

from aiohttp import web

from keys.constants import PROTOCOL_VERSION
from keys.identity import format_fingerprint

from ..httputil import json_response
from ..metrics import Metrics
from ..openapi import openapi_document
from ..context import RELAY


async def healthz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    await relay.store.ping()
    body = {"status": "draining" if relay.draining else "ok"}
    if relay.cluster.size > 1:
        body["worker"] = relay.cluster.index       # which process answered, for operators
    return json_response(body, status=503 if relay.draining else 200)


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
