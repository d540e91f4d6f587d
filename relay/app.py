"""``make_app(settings)``: the aiohttp application.

The error middleware is the one place where exceptions become wire errors:
``RelayError`` and store errors carry their code; aiohttp's own HTTP errors
(unknown route, wrong method) are mapped to catalogue codes; anything else is
a bug, logged with its traceback and answered with a bare 500 that reveals
nothing.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from keys.encoding import canonical

from .auth import RateLimiter
from .blobs import BlobFiles
from .constants import ANON_RATE_BURST, ANON_RATE_PER_SECOND
from .context import MEMBER, RELAY, Relay
from .db import StoreError
from .errors import RelayError
from .relaykey import ensure_data_dir, load_relay_key, load_token_secret
from .routes import ROUTES
from .settings import RelaySettings
from .store import Store
from .sweeper import sweeper

log = logging.getLogger("comity.relay")
#: the background sweep task (relay/sweeper.py)
SWEEPER = web.AppKey("sweeper", asyncio.Task)
access_log = logging.getLogger("comity.relay.access")

_HTTP_CODES = {404: "not-found", 405: "method-not-allowed", 413: "too-large",
               415: "unsupported-media-type", 400: "bad-request"}


def _error_response(error: RelayError) -> web.Response:
    return web.Response(body=canonical(error.body()), status=error.status,
                        content_type="application/json", headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except RelayError as exc:
        return _error_response(exc)
    except StoreError as exc:
        return _error_response(RelayError(exc.code, exc.message, headers=getattr(exc, "headers", None)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "bad-request")
        # Keep what the client needs from aiohttp's own refusal (Allow on a 405).
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
        return _error_response(RelayError(code, headers=headers))
    except (RequestPayloadError, HttpProcessingError):
        # The body could not be read: a bad Content-Encoding, broken chunked framing.
        return _error_response(RelayError("bad-request", "the request body could not be read"))
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Not the client's fault, and nothing was acknowledged: retry once space is freed.
            log.error("disk full: %s %s refused", request.method, request.path)
            return _error_response(RelayError("unavailable", "the relay's disk is full: retry later",
                                              headers={"Retry-After": "60"}))
        log.exception("bug: unhandled error in %s %s", request.method, request.match_info.route.resource
                      and request.match_info.route.resource.canonical)
        return web.Response(body=b'{"error":"internal","message":"internal error"}', status=500,
                            content_type="application/json")


#: HTTP methods counted under their own name in /metrics; any other is "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def access_middleware(request: web.Request, handler):
    relay: Relay = request.app[RELAY]
    started = time.perf_counter()
    response = None
    try:
        response = await handler(request)
        return response
    finally:
        status = response.status if response is not None else 499
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        # Label values come from a fixed set: a client inventing methods cannot grow memory.
        method = request.method if request.method in _METHODS else "other"
        relay.metrics.inc("comity_requests_total", method=method, route=template,
                          status=str(status))
        if relay.settings.access_log:
            # The route template, never the raw path or headers: no tokens, ids or invite ids.
            access_log.info(json.dumps({
                "t": round(time.time(), 3), "method": request.method, "route": template,
                "status": status, "ms": round((time.perf_counter() - started) * 1000, 2),
                "member": request.get(MEMBER), "peer": request.remote}))


_ANONYMOUS = {"/v1/networks", "/v1/networks/{network}/auth/challenge",
              "/v1/networks/{network}/auth/token", "/v1/networks/{network}/enrollments"}


@web.middleware
async def anonymous_rate_middleware(request: web.Request, handler):
    route = request.match_info.route.resource
    if route is not None and route.canonical in _ANONYMOUS and request.method == "POST":
        relay: Relay = request.app[RELAY]
        if not relay.anon_limiter.allow(request.remote):
            relay.metrics.inc("comity_rate_limited_total")
            raise RelayError("rate-limited", headers={"Retry-After": "1"})
    return await handler(request)


@web.middleware
async def draining_middleware(request: web.Request, handler):
    if request.app[RELAY].draining and request.path != "/healthz":
        raise RelayError("unavailable", headers={"Connection": "close", "Retry-After": "2"})
    return await handler(request)


def make_app(settings: RelaySettings, *, clock=time.time) -> web.Application:
    """The application; the store opens on startup and closes on cleanup."""
    app = web.Application(
        middlewares=[access_middleware, error_middleware, draining_middleware,
                     anonymous_rate_middleware],
        # Handlers stream bodies themselves with their own caps; this only bounds request.read().
        client_max_size=settings.max_json_body,
    )
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)

    async def startup(app: web.Application) -> None:
        data = settings.data_path
        ensure_data_dir(data)
        store = await Store.open(data / "relay.db")
        relay = Relay(settings, store, BlobFiles(data / "blobs"), load_relay_key(data),
                      load_token_secret(data), clock=clock)
        relay.anon_limiter = RateLimiter(ANON_RATE_PER_SECOND, ANON_RATE_BURST)
        app[RELAY] = relay
        app[SWEEPER] = asyncio.create_task(sweeper(relay))

    async def cleanup(app: web.Application) -> None:
        app[SWEEPER].cancel()
        try:
            await app[SWEEPER]
        except asyncio.CancelledError:
            pass
        await app[RELAY].store.close()

    async def shutdown(app: web.Application) -> None:
        app[RELAY].draining = True

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("comity")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
