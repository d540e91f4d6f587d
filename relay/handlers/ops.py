"""Operations: /healthz, /metrics, /v1/relay, /v1/openapi.json."""

from __future__ import annotations

from aiohttp import web

from keys.constants import PROTOCOL_VERSION
from keys.identity import format_fingerprint

from ..httputil import json_response
from ..openapi import openapi_document
from ..context import RELAY


async def healthz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    await relay.store.ping()
    return json_response({"status": "draining" if relay.draining else "ok"},
                         status=503 if relay.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    counts = await relay.store.counts()
    gauges = {
        "comity_messages_stored": counts.messages,
        "comity_message_bytes_stored": counts.message_bytes,
        "comity_blobs_stored": counts.blobs,
        "comity_blob_bytes_stored": counts.blob_bytes,
        "comity_write_queue_depth": relay.store.db.queue_depth(),
        "comity_websocket_connections": relay.hub.connections(),
    }
    return web.Response(text=relay.metrics.render(gauges),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def relay_info(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    return json_response({
        "relay_key": relay.key.public.b64(),
        "fingerprint": format_fingerprint(relay.key.public.fingerprint()),
        "protocol": PROTOCOL_VERSION,
    })


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
