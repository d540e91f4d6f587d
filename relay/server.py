"""Run the relay: listen, announce, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys

from aiohttp import web

from keys.identity import format_fingerprint

from .app import make_app
from .constants import SHUTDOWN_GRACE
from .settings import RelaySettings


def _ssl_context(settings: RelaySettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve(settings: RelaySettings) -> None:
    app = make_app(settings)
    # Our access middleware logs; aiohttp's own access log would repeat it.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE,
                           handle_signals=False)
    await runner.setup()
    context = _ssl_context(settings)
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context,
                       reuse_address=True)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    scheme = "https" if context else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    relay = app["relay"]
    print(f"listening on {scheme}://{host}:{port}", flush=True)
    print(f"relay fingerprint {format_fingerprint(relay.key.public.fingerprint())}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("draining and shutting down", file=sys.stderr, flush=True)
    # AppRunner.cleanup stops accepting, lets in-flight requests finish (up to the
    # grace period), closes WebSockets, then runs on_cleanup (store drained and closed).
    await runner.cleanup()
