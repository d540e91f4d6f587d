"""``make_app(settings)``: the aiohttp application.

One middleware (``front_middleware``) wraps every handler; it is the one place
where exceptions become wire errors:
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
from .cluster import Cluster
from .constants import ANON_RATE_BURST, ANON_RATE_PER_SECOND, RETRY_DISK_FULL, RETRY_UNAVAILABLE
from .context import MEMBER, RELAY, Relay
from .db import StoreError
from .errors import RelayError
from .handlers.ops import worker_metrics
from .keyring import RelayKeys
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
    headers = error.headers
    if error.status == 503 and "Retry-After" not in headers:
        # Every 503 says when to come back, so no client retries in a tight loop.
        headers = {**headers, "Retry-After": str(RETRY_UNAVAILABLE)}
    response = web.Response(body=canonical(error.body()), status=error.status,
                            content_type="application/json", headers=headers)
    if headers.get("Connection") == "close":
        response.force_close()                 # the header alone would not make aiohttp close
    return response


class InFlight:
    """Counts HTTP requests being handled, so a drain can wait for exactly those.

    aiohttp's own graceful shutdown stops reading from every connection before
    it waits, which strands an upload whose body is still arriving; so the
    relay waits for its requests itself first, with the connections still
    open, and only then lets aiohttp close them. Push WebSockets are not
    counted (they never end on their own) but kept, to be closed after the
    requests: a client reconnects and catches up from its mailbox.
    """

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()
        #: tasks serving push WebSockets
        self.sockets: set[asyncio.Task] = set()


#: the application's count of requests in flight (relay/server.py drains on it)
IN_FLIGHT = web.AppKey("in_flight", InFlight)

#: HTTP methods counted under their own name in /metrics; any other is "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: unauthenticated POSTs that spend the client address's budget up front. Not the auth routes:
#: a challenge is derived, not stored, and costs an HMAC; a token request spends the budget
#: only if it fails (relay/handlers/session.py), so a flood from a member's address (a shared
#: NAT, a proxy) cannot keep the member from logging in.
_ANONYMOUS = frozenset({"/v1/networks", "/v1/networks/{network}/enrollments"})


def _wire_error(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an exception a handler raised; re-raises what is not an answer."""
    if isinstance(exc, RelayError):
        return _error_response(exc)
    if isinstance(exc, StoreError):
        return _error_response(RelayError(exc.code, exc.message, headers=getattr(exc, "headers", None)))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "bad-request")
        # Keep what the client needs from aiohttp's own refusal (Allow on a 405).
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
        return _error_response(RelayError(code, headers=headers))
    if isinstance(exc, (RequestPayloadError, HttpProcessingError)):
        # The body could not be read: a bad Content-Encoding, broken chunked framing.
        return _error_response(RelayError("bad-request", "the request body could not be read"))
    if isinstance(exc, ConnectionResetError):
        raise exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # Not the client's fault, and nothing was acknowledged: retry once space is freed.
        # Logged by route template: the raw path holds a blob id, which is a capability.
        route = request.match_info.route.resource
        request.app[RELAY].store.db.health.saw(
            exc, f"{request.method} {route.canonical if route is not None else 'unmatched'}")
        return _error_response(RelayError("unavailable", "the relay's disk is full: retry later",
                                          headers={"Retry-After": str(RETRY_DISK_FULL)}))
    route = request.match_info.route.resource
    log.exception("bug: unhandled error in %s %s", request.method, route and route.canonical,
                  exc_info=exc)
    return web.Response(body=b'{"error":"internal","message":"internal error"}', status=500,
                        content_type="application/json")


async def _guarded(request: web.Request, handler, relay: Relay, template: str) -> web.StreamResponse:
    """Refusals before the handler (draining, anonymous rate limit), then the handler."""
    if relay.draining and request.path != "/healthz":
        raise RelayError("unavailable", headers={"Connection": "close", "Retry-After": "2"})
    if template in _ANONYMOUS and request.method == "POST":
        if not relay.anon_limiter.allow(request.remote):
            relay.metrics.inc("comity_rate_limited_total")
            raise RelayError("rate-limited", headers={"Retry-After": "1"})
    return await handler(request)


@web.middleware
async def front_middleware(request: web.Request, handler):
    """The one middleware every request passes: counts it in flight, refuses it while
    draining or over the anonymous rate limit, turns exceptions into JSON errors, and
    logs and counts it. (One layer, not five: each layer cost about 6 µs a request.)"""
    app = request.app
    relay: Relay = app[RELAY]
    in_flight = app[IN_FLIGHT]
    started = time.perf_counter()
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    if request.headers.get("Upgrade", "").lower() == "websocket":
        task = asyncio.current_task()
        in_flight.sockets.add(task)
    else:
        task = None
        in_flight.count += 1
        in_flight.idle.clear()
    status = 499                               # the client went away (or we were cancelled)
    try:
        try:
            response = await _guarded(request, handler, relay, template)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = _wire_error(request, exc)
        status = response.status
        return response
    finally:
        if task is not None:
            in_flight.sockets.discard(task)
        else:
            in_flight.count -= 1
            if not in_flight.count:
                in_flight.idle.set()
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


def make_app(settings: RelaySettings, *, clock=time.time,
             cluster: Cluster | None = None) -> web.Application:
    """The application; the store opens on startup and closes on cleanup.

    ``cluster``: this worker's place among several (relay/supervisor.py); None
    for a relay that is one process.
    """
    cluster = cluster or Cluster.single()
    app = web.Application(
        middlewares=[front_middleware],
        # Handlers stream bodies themselves with their own caps; this only bounds request.read().
        client_max_size=settings.max_json_body,
    )
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app[IN_FLIGHT] = InFlight()

    async def startup(app: web.Application) -> None:
        data = settings.data_path
        ensure_data_dir(data)
        store = await Store.open(data / "relay.db")
        load_relay_key(data)                # creates it on first start
        relay = Relay(settings, store, BlobFiles(data / "blobs"), RelayKeys(data),
                      load_token_secret(data), clock=clock, cluster=cluster)
        relay.anon_limiter = RateLimiter(ANON_RATE_PER_SECOND, ANON_RATE_BURST)
        app[RELAY] = relay
        cluster.start({"push": relay.hub.on_sibling_event,
                       "metrics": lambda request: cluster.answer(request, worker_metrics(relay))})
        if cluster.primary:                 # one sweep per relay, not one per worker
            app[SWEEPER] = asyncio.create_task(sweeper(relay))

    async def cleanup(app: web.Application) -> None:
        cluster.stop()
        if SWEEPER in app:
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


class _FramingErrors(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback whose message quotes the raw line,
    a bearer token included (issue 10). Such refusals, and clients that drop their connection,
    become one short line naming the error class only: never the bytes the client sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            what = "refused a malformed HTTP request"
        elif isinstance(exc, (ConnectionError, asyncio.CancelledError)):
            what = "a client dropped its connection"
        else:
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = f"{what} from %s ({type(exc).__name__})", (peer,)
        record.exc_info, record.exc_text = None, None
        return True


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("comity")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [_FramingErrors()]
    server.handlers[:] = [handler]
    server.propagate = False
