"""Run the relay: lock the data folder, listen, announce, drain on SIGTERM.

Start-up order, and what each failure says (``ServeError``, exit status 1):

1. load the TLS certificate, if any   -> "cannot load the TLS certificate ..."
2. lock ``<data_dir>/relay.lock``     -> "another comity-relay is using ..."
3. check the storage (relay/datacheck.py: the database is there if the rest of a relay is,
   passes quick_check, and is not behind its write mark)
                                      -> the check's own one-line error and hint
   open the database and keys         -> "cannot open the data folder ..."
4. bind the socket                    -> "cannot listen on HOST:PORT: ..."
5. print ``listening on URL`` and ``relay fingerprint ...`` on stdout (flushed)

The lock (``flock``, released by the kernel even after SIGKILL) keeps a second
relay off the same data folder. With ``--workers N`` the supervisor
(relay/supervisor.py) takes it, binds the sockets and forks N workers that run
``serve`` with a ``WorkerSetup``: they skip the lock (they inherit it), listen
on the socket they are given, print nothing on stdout, and take their drain
order from the supervisor's control pipe instead of signals. ``comity-relay
token`` does not take the lock: it only adds one row through SQLite's own
locking.

Connections are guarded per process, workers included (relay/connections.py): a cap
derived from the file-handle limit, deadlines for request headers and idle keep-alive, JSON
answers to unparsable requests, and accept errors logged once per interval.

On SIGTERM or SIGINT: stop listening (new connections are refused at once),
answer 503 to new requests on kept-alive connections, let requests in flight
(uploads still receiving their body included) finish for up to
``SHUTDOWN_GRACE`` (a second signal cuts this short), give push WebSockets and
overdue requests ``CLOSE_GRACE`` more, close the database, return (exit 0).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import sqlite3
import ssl
import sys
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from aiohttp import web

from keys.identity import format_fingerprint

from .app import IN_FLIGHT, InFlight, make_app
from .cluster import Cluster
from .connections import ConnectionGuard, GuardedRunner, derived_limit
from .constants import CLOSE_GRACE, SHUTDOWN_GRACE
from .datacheck import check_before_start
from .db import StoreError
from .integrity import Refused
from .relaykey import KeyFileError, ensure_data_dir
from .settings import RelaySettings
from .context import RELAY

LOCK_FILE = "relay.lock"

log = logging.getLogger("comity.relay")


class ServeError(Exception):
    """the relay cannot start"""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def ssl_context(settings: RelaySettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(f"cannot load the TLS certificate {settings.tls_cert} and key "
                         f"{settings.tls_key}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on the data folder for the life of the process."""
    try:
        ensure_data_dir(data_dir)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ServeError(f"cannot open the data folder {data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServeError(f"another comity-relay is already using {data_dir}",
                         hint="stop it first: one relay (or one --workers supervisor) per data folder") from None
    return fd


def url(tls: bool, host: str, port: int) -> str:
    """The URL clients use for a relay listening on ``host``:``port``."""
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _forwarded_middleware(proxies: tuple):
    """Take the client address from X-Forwarded-For when a trusted proxy sends it.

    Only the direct peer's word counts, and each trusted hop's: walking the
    header from the right, the first address that is not a trusted proxy is
    the client. Anything a client wrote further left is ignored, so a client
    cannot pick the address its rate limit is counted against.
    """
    def trusted(text: str) -> bool:
        try:
            address = ip_address(text)
        except ValueError:
            return False
        return any(address in network for network in proxies)

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.remote and trusted(request.remote):
            hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", ())
                    for hop in value.split(",") if hop.strip()]
            client = next((hop for hop in reversed(hops) if not trusted(hop)), None)
            if client is not None:
                try:
                    request = request.clone(remote=str(ip_address(client)))
                except ValueError:
                    pass                          # not an address: keep the proxy's
        return await handler(request)
    return middleware


@dataclass
class WorkerSetup:
    """What the supervisor (relay/supervisor.py) hands a worker process it forked."""

    cluster: Cluster
    #: this worker's listening socket (SO_REUSEPORT: the kernel spreads connections)
    listener: socket.socket
    #: read end of the supervisor's control pipe: b"d" drain, b"h" hurry, end of file = drain
    control: int
    #: write end of the ready pipe: one byte once the worker accepts connections
    ready: int


async def serve(settings: RelaySettings, worker: WorkerSetup | None = None) -> None:
    """Run until SIGTERM or SIGINT (a worker: until the supervisor says), then drain."""
    context = ssl_context(settings)
    lock = lock_data_dir(settings.data_path) if worker is None else None
    app = make_app(settings, cluster=worker.cluster if worker else None)
    if settings.proxy_networks:
        # Before the access log and the rate limits, which both use request.remote.
        app.middlewares.insert(0, _forwarded_middleware(settings.proxy_networks))
    # Our access middleware logs; aiohttp's own access log would repeat it. By the
    # time aiohttp's shutdown runs only push sockets and overdue requests are left.
    # Each process (each worker too) guards its own connections and file handles.
    guard = ConnectionGuard(derived_limit(settings.max_connections), settings.header_timeout)
    guard.install_accept_errors(asyncio.get_running_loop())
    runner = GuardedRunner(app, guard, access_log=None, shutdown_timeout=CLOSE_GRACE,
                           handle_signals=False, keepalive_timeout=settings.keepalive_timeout)
    try:
        try:
            if worker is None:                 # workers: the supervisor checked before forking
                await asyncio.to_thread(check_before_start, settings.data_path)
            await runner.setup()               # on_startup: database, relay key, sweeper
        except Refused as exc:
            raise ServeError(exc.message, hint=exc.hint) from None
        except (StoreError, KeyFileError, OSError, sqlite3.Error) as exc:
            message = getattr(exc, "strerror", None) or exc
            raise ServeError(f"cannot open the data folder {settings.data_dir}: {message}") from None
        if worker is None:
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context,
                               reuse_address=True)
        else:
            site = web.SockSite(runner, worker.listener, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(f"cannot listen on {settings.host}:{settings.port}: "
                             f"{exc.strerror or exc}") from None
        stop, hurry = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        relay = app[RELAY]
        guard.count_into(relay.metrics)
        if worker is None:
            for signum in (signal.SIGTERM, signal.SIGINT):
                # The first signal drains; a second one stops waiting for requests in flight.
                loop.add_signal_handler(signum, lambda: hurry.set() if stop.is_set() else stop.set())
            port = site._server.sockets[0].getsockname()[1]
            print(f"listening on {url(context is not None, settings.host, port)}", flush=True)
            print(f"relay fingerprint {format_fingerprint(relay.key.public.fingerprint())}",
                  flush=True)
        else:
            loop.add_reader(worker.control, _read_control, worker.control, stop, hurry)
            os.write(worker.ready, b"r")
        await stop.wait()
        await site.stop()                      # the listening socket is closed: connections refused
        relay.draining = True                  # new requests on open connections get 503
        if worker is None:
            print("draining and shutting down", file=sys.stderr, flush=True)
        await _drain(app[IN_FLIGHT], hurry)
    finally:
        # AppRunner.cleanup closes idle connections, runs on_shutdown, gives what is
        # left (push sockets, overdue requests) CLOSE_GRACE before cancelling it, then
        # runs on_cleanup (sweeper stopped, database writes drained and closed). It
        # also runs after a failed start.
        if runner.server is not None:
            await runner.cleanup()
        if lock is not None:
            os.close(lock)


def _read_control(fd: int, stop: asyncio.Event, hurry: asyncio.Event) -> None:
    """The supervisor's word: drain, hurry, or (end of file) it is gone, so drain."""
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return
    if not data:
        asyncio.get_running_loop().remove_reader(fd)
    if not data or b"d" in data:
        stop.set()
    if b"h" in data:
        stop.set()
        hurry.set()


async def _drain(in_flight: InFlight, hurry: asyncio.Event) -> None:
    """Wait up to SHUTDOWN_GRACE for the requests in flight (less after a second signal)."""
    waiters = {asyncio.ensure_future(in_flight.idle.wait()), asyncio.ensure_future(hurry.wait())}
    try:
        await asyncio.wait(waiters, timeout=SHUTDOWN_GRACE, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if in_flight.count:
        log.warning("stopping with %d request(s) still running: they are cancelled",
                    in_flight.count)
    # Push sockets next, while their connections still read: cancelled, the events
    # handler sends a close frame and the client's answer completes the handshake.
    sockets = list(in_flight.sockets)
    for task in sockets:
        task.cancel()
    if sockets:
        await asyncio.wait(sockets, timeout=CLOSE_GRACE)
