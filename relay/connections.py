"""Hostile and slow connections: a cap on open connections, a deadline for request headers,
JSON answers to unparsable requests, and accept errors logged once per interval.

aiohttp closes an idle kept-alive connection after ``keepalive_timeout`` (set by
relay/server.py) but has no deadline for a request's headers, no cap on open
connections and answers a request it cannot parse in text/plain. ``GuardedRunner``
builds aiohttp's server with ``GuardedHandler``, its per-connection protocol, which adds:

* a cap (``ConnectionGuard.limit``, below the file-handle limit): at the cap a new
  connection first takes the place of the connection idle longest (one waiting
  for a request); if every connection is busy with a request it is answered with a
  ready-made ``503 unavailable`` and closed at once, without reading it;
* a header deadline: a connection must deliver a request's complete headers within
  ``header_timeout`` of connecting (or of the first byte of a later request);
* the relay's ``{"error", "message"}`` JSON for a request aiohttp cannot parse.

The body-progress deadline is where bodies are read (relay/httputil.py ``body_chunks``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from keys.encoding import canonical

from .constants import (CONNECTION_RESERVE, CONNECTION_SHARE, LOG_EVERY,
                        MAX_DERIVED_CONNECTIONS, MIN_CONNECTIONS)
from .errors import CATALOGUE, RelayError

log = logging.getLogger("comity.relay")

#: the answer at the cap when no connection can make room: written as is, nothing is read
_FULL = RelayError("unavailable", "the relay has too many open connections: retry shortly")
_FULL_BODY = canonical(_FULL.body())
FULL_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                 b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                 + str(len(_FULL_BODY)).encode() + b"\r\n\r\n" + _FULL_BODY)

#: accept() failures that mean "out of file handles or memory" (asyncio pauses accepting 1 s)
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def derived_limit(setting: int) -> int:
    """``max_connections`` if set, else a share of the file-handle limit (``ulimit -n``).

    Each connection holds one handle; the database, its journal, the log, the listening
    socket and the workers' pipes take a few (CONNECTION_RESERVE), and a blob upload or
    download holds a file beside its connection, hence only a share for connections."""
    if setting:
        return setting
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DERIVED_CONNECTIONS
    return min(MAX_DERIVED_CONNECTIONS,
               max(MIN_CONNECTIONS, int((soft - CONNECTION_RESERVE) * CONNECTION_SHARE)))


class Tally:
    """Counts an event and logs one line about it at most every ``interval`` seconds.

    The first event is logged at once; later ones are summed into the next line, so a
    flood costs one line per interval, never one per event. Each event is also counted in
    ``comity_connections_shed_total{reason}`` once the relay's metrics exist."""

    def __init__(self, reason: str, text: str, interval: float = LOG_EVERY,
                 level: int = logging.WARNING):
        self.reason, self.text, self.interval, self.level = reason, text, interval, level
        self.metrics = None
        self._pending = 0
        self._last = float("-inf")

    def add(self) -> None:
        if self.metrics is not None:
            self.metrics.inc("comity_connections_shed_total", reason=self.reason)
        self._pending += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.log(self.level, self.text, self._pending)
            self._pending, self._last = 0, now


class ConnectionGuard:
    """The open connections of one process, and what was done about too many."""

    def __init__(self, limit: int, header_timeout: float):
        self.limit, self.header_timeout = limit, header_timeout
        #: open connections, oldest first (a dict keeps insertion order)
        self.open: dict[GuardedHandler, None] = {}
        self.refused = Tally("refused", f"refused %d connection(s): {limit} are open and busy "
                             "(max_connections)")
        self.evicted = Tally("evicted", f"closed %d idle connection(s) to make room: {limit} "
                             "were open (max_connections)")
        self.slow = Tally("header-timeout", "closed %d connection(s) that sent no complete "
                          f"request headers within {header_timeout:g} s (header_timeout)")
        self.accept_errors = Tally("accept-error", "could not accept %d connection(s): out of "
                                   "file handles (raise ulimit -n or lower max_connections)")

    def count_into(self, metrics) -> None:
        """Count what is shed in the relay's metrics (they exist once the app started)."""
        for tally in (self.refused, self.evicted, self.slow, self.accept_errors):
            tally.metrics = metrics

    def admit(self, handler: GuardedHandler) -> bool:
        """Whether ``handler``'s new connection may stay, making room if one is idle."""
        if len(self.open) >= self.limit:
            # The oldest idle connection is the likeliest to be a silent attacker, and a
            # client whose idle keep-alive connection closes simply opens a new one.
            victim = next((h for h in self.open if h.idle), None)
            if victim is None:
                self.refused.add()
                return False
            self.evicted.add()
            self.release(victim)
            victim.force_close()
        self.open[handler] = None
        return True

    def release(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)

    def install_accept_errors(self, loop: asyncio.AbstractEventLoop) -> None:
        """Log "out of file handles" accept errors once per interval, not one traceback each."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS \
                    and "accept" in context.get("message", ""):
                self.accept_errors.add()
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
        loop.set_exception_handler(handler)


class GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, under a ``ConnectionGuard``."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs):
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def idle(self) -> bool:
        """Waiting for a request: no request being handled and none parsed and queued."""
        return self.transport is not None and self._current_request is None \
            and not self._messages and not self._request_in_progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            self._refused = True
            transport.write(FULL_RESPONSE)     # type: ignore[attr-defined]
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._guard.release(self)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()                     # the headers are in: the body has its own deadline
        elif data and self._deadline is None and self.idle:
            self._arm()                        # the first bytes of a later request

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(self._guard.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        if not self.idle:
            self._arm()                        # a request is being handled: check again later
            return
        self._guard.slow.add()
        self.force_close()

    async def finish_response(self, request, resp, start_time):
        result = await super().finish_response(request, resp, start_time)
        if resp.keep_alive is False and not request.content.is_eof():
            # A refusal that closes the connection (a stalled body, draining): close it now,
            # not after aiohttp's "lingering" of up to 10 s reading a body nobody wants.
            self.force_close()
        return result

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's refusal of a request it cannot parse, as the relay's JSON error.

        aiohttp's own version (called for its logging, one line through the filter in
        relay/app.py) quotes the parser's message, which can hold the raw bytes sent; the
        JSON says only what went wrong."""
        super().handle_error(request, status, exc, message)
        code = next((c for c, (s, _) in CATALOGUE.items() if s == status), None)
        if code is None:
            body = {"error": "internal", "message": "internal error"} if status >= 500 else \
                RelayError("bad-request").body()
        else:
            text = "the request is not valid HTTP" if code == "bad-request" else None
            body = RelayError(code, text).body()
        response = web.Response(body=canonical(body), status=status,
                                content_type="application/json")
        response.force_close()
        return response


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server makes ``GuardedHandler`` protocols."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs):
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _GuardedServer(server, self.guard)


class _GuardedServer(web.Server):
    """aiohttp's Server as the application built it, making guarded protocols."""

    def __init__(self, built: web.Server, guard: ConnectionGuard):
        # Rebuilt from the Server the application made, so every handler option it was
        # given (access log, keep-alive timeout, limits) is kept.
        super().__init__(built.request_handler, request_factory=built.request_factory,
                         handler_cancellation=built.handler_cancellation,
                         loop=built._loop, **built._kwargs)
        self.guard = guard

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)
