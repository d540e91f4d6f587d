"""``comity-relay serve --workers N``: N worker processes on one data folder.

One Python process handles requests on one core. To use more, the supervisor
prepares everything that must happen once, then forks N workers that each run
the ordinary relay (relay/server.py) on their own listening socket:

1. load the TLS certificate (each worker loads its own copy later), lock the
   data folder, check the storage (relay/datacheck.py), create or migrate the
   database, create the relay key;
2. bind N sockets to the same address with ``SO_REUSEPORT``, so the kernel
   spreads incoming connections over the workers (one shared socket would let
   whichever worker wakes first take a whole burst of connections);
3. create what the workers share (relay/cluster.py: log epochs, inboxes);
4. fork the workers and wait until each one accepts connections, then print
   ``listening on URL`` and the relay fingerprint, as a single process does.

The database is shared through SQLite; each worker's writer takes a file lock
around its transaction (relay/db.py). Worker 0 runs the background sweep.

Signals go to the supervisor only (systemd's ``KillMode=mixed``; Ctrl-C reaches
the workers too, and they ignore it): on SIGTERM or SIGINT it closes its
copies of the listening sockets and tells every worker to drain through its
control pipe; a second signal tells them to hurry. It exits 0 once every
worker has exited 0. A worker that dies on its own is started again (the
relay keeps serving: its connections were lost, its acknowledged writes were
not); if workers keep dying, the supervisor stops the relay and exits 1. If
the supervisor itself is killed, each worker sees its control pipe close and
drains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import sqlite3
import sys
import time
import traceback

from keys.identity import format_fingerprint

from .cluster import Cluster
from .datacheck import check_before_start
from .integrity import Refused
from .relaykey import KeyFileError, ensure_data_dir, load_relay_key, load_token_secret
from .server import ServeError, WorkerSetup, lock_data_dir, ssl_context, serve, url
from .settings import RelaySettings

log = logging.getLogger("comity.relay")

#: seconds every worker has to start accepting connections
START_TIMEOUT = 60.0
#: a worker that dies this soon after starting counts toward RESTART_LIMIT
RESTART_WINDOW = 60.0
#: restarts within RESTART_WINDOW after which the supervisor gives up
RESTART_LIMIT = 5
#: pending connections per worker socket
BACKLOG = 512


def run(settings: RelaySettings) -> int:
    """Serve with ``settings.workers`` processes until told to stop; the exit status."""
    ssl_context(settings)                      # refuse a bad certificate before forking
    lock = lock_data_dir(settings.data_path)
    try:
        fingerprint = prepare(settings)
        listeners = _listen(settings.host, settings.port, settings.workers)
        return _Supervisor(settings, listeners, fingerprint).run()
    finally:
        os.close(lock)


def prepare(settings: RelaySettings) -> str:
    """Create or migrate the database and the relay key once, before any worker exists."""
    from .db import StoreError
    from .store import Store

    data = settings.data_path

    async def migrate() -> None:
        store = await Store.open(data / "relay.db")
        await store.close()
    try:
        ensure_data_dir(data)
        check_before_start(data)                # once, for every worker
        asyncio.run(migrate())                  # no thread survives it: safe to fork after
        key = load_relay_key(data)
        load_token_secret(data)
    except Refused as exc:
        raise ServeError(exc.message, hint=exc.hint) from None
    except (StoreError, KeyFileError, OSError, sqlite3.Error) as exc:
        message = getattr(exc, "strerror", None) or exc
        raise ServeError(f"cannot open the data folder {settings.data_dir}: {message}") from None
    return format_fingerprint(key.public.fingerprint())


def _listen(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (``port`` 0: a free port, the same for all)."""
    sockets: list[socket.socket] = []
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()        # a port chosen by the kernel, for the others
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


class _Supervisor:
    def __init__(self, settings: RelaySettings, listeners: list[socket.socket], fingerprint: str):
        self.settings = settings
        self.listeners: list[socket.socket | None] = list(listeners)
        self.port = listeners[0].getsockname()[1]
        self.fingerprint = fingerprint
        self.clusters = Cluster.create(settings.workers)
        self.controls = [os.pipe() for _ in listeners]      # (worker reads, we write)
        self.ready_read, self.ready_write = os.pipe()
        os.set_blocking(self.ready_read, False)
        self.pids: dict[int, int] = {}                      # pid -> worker index
        self.stopping = False
        self.signals = 0
        self.restarts: list[float] = []
        self.failed = False

    # -- the supervisor -------------------------------------------------------------------------

    def run(self) -> int:
        for index in range(len(self.listeners)):
            self._spawn(index)
        if not self._wait_ready():
            self._stop(hurry=True)
            self._reap_all()
            return 1
        tls = self.settings.tls_cert is not None
        print(f"listening on {url(tls, self.settings.host, self.port)}", flush=True)
        print(f"relay fingerprint {self.fingerprint}", flush=True)
        log.info("%d workers serving", len(self.listeners))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        statuses = self._reap_all()
        return 1 if self.failed or any(statuses) else 0

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1
        if self.signals == 1:
            print("draining and shutting down", file=sys.stderr, flush=True)
        self._stop(hurry=self.signals > 1)

    def _stop(self, *, hurry: bool) -> None:
        """Stop listening and tell every worker to drain (or to hurry)."""
        self.stopping = True
        for index, sock in enumerate(self.listeners):
            if sock is not None:                # the workers' own copies stay open until
                sock.close()                    # they have stopped accepting
                self.listeners[index] = None
        for _, write in self.controls:
            try:
                os.write(write, b"h" if hurry else b"d")
            except OSError:
                pass                            # that worker is gone already

    def _wait_ready(self) -> bool:
        """True once every worker accepts connections; False if one died or time ran out."""
        ready, deadline = 0, time.monotonic() + START_TIMEOUT
        while ready < len(self.listeners):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print("error: the relay workers did not start in time", file=sys.stderr)
                return False
            readable, _, _ = select.select([self.ready_read], [], [], min(remaining, 0.2))
            if readable:
                ready += len(os.read(self.ready_read, 64))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self.pids.pop(pid, None)
                return False                    # the worker printed why
        return True

    def _reap_all(self) -> list[int]:
        """Wait for the workers; restart one that dies while the relay is serving."""
        statuses = []
        while self.pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                statuses.append(code)
                continue
            log.error("worker %d exited unexpectedly (status %d)", index, code)
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > RESTART_LIMIT:
                log.error("workers keep exiting: stopping the relay")
                self.failed = True
                self._stop(hurry=True)
                continue
            self._drain_ready()
            self._spawn(index)
        return statuses

    def _drain_ready(self) -> None:
        try:
            while os.read(self.ready_read, 4096):
                pass
        except BlockingIOError:
            pass

    # -- a worker -------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            self.pids[pid] = index
            return
        status = 1
        try:
            status = self._worker(index)
        except BaseException:                   # never return into the supervisor's code
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _worker(self, index: int) -> int:
        # Signals are the supervisor's business: it relays them through the control pipe.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster = self.clusters[index]
        keep = {id(sock) for sock in cluster.sockets()}
        for other in self.clusters:             # the other workers' inboxes, our own sender
            for sock in other.sockets():
                if id(sock) not in keep:
                    sock.close()
        for other_index, sock in enumerate(self.listeners):
            if other_index != index and sock is not None:
                sock.close()
        for other_index, (read, write) in enumerate(self.controls):
            os.close(write)                     # so that the supervisor's death is an EOF
            if other_index != index:
                os.close(read)
        os.close(self.ready_read)
        setup = WorkerSetup(cluster, self.listeners[index], self.controls[index][0],
                            self.ready_write)
        try:
            asyncio.run(serve(self.settings, setup))
        except ServeError as exc:
            print(f"error: worker {index}: {exc.message}", file=sys.stderr)
            return 1
        return 0
