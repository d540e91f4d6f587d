"""Request parsing shared by the handlers: bounded JSON bodies, ids, pages."""

from __future__ import annotations

import asyncio
import re
from typing import Any, AsyncIterator

from aiohttp import web

from keys.encoding import parse
from keys.errors import EncodingError

from .errors import RelayError
from .context import RELAY

#: message and blob ids: base64url of 16 random bytes, as keys.envelope makes them
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,62}[a-z0-9]")


async def body_chunks(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """The request body in chunks of at most ``size`` bytes, each within ``body_timeout``.

    A body that stops arriving is refused (408, and the connection closed) instead of
    holding its handler, and an upload's blob lock, for as long as the client likes."""
    timeout = request.app[RELAY].settings.body_timeout
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.read(size)
        except TimeoutError:
            request.app[RELAY].metrics.inc("comity_connections_shed_total", reason="body-timeout")
            raise RelayError("request-timeout", headers={"Connection": "close"}) from None
        if not chunk:
            return
        yield chunk


async def read_json(request: web.Request, required: set[str], optional: set[str] = frozenset()
                    ) -> dict[str, Any]:
    """The body as a JSON object with exactly the allowed fields, within the size cap."""
    if request.content_type != "application/json":
        raise RelayError("unsupported-media-type")
    limit = request.app[RELAY].settings.max_json_body
    if request.content_length is not None and request.content_length > limit:
        raise RelayError("too-large", f"the body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in body_chunks(request, 64 * 1024):
        body += chunk
        if len(body) > limit:
            raise RelayError("too-large", f"the body is larger than {limit} bytes")
    try:
        value = parse(bytes(body))
    except EncodingError as exc:
        raise RelayError("bad-json", exc.message) from None
    if not isinstance(value, dict):
        raise RelayError("bad-json", "the body must be a JSON object")
    missing = required - value.keys()
    if missing:
        raise RelayError("bad-request", f"missing field(s): {', '.join(sorted(missing))}")
    unknown = value.keys() - required - optional
    if unknown:
        raise RelayError("bad-request", f"unknown field(s): {', '.join(sorted(unknown))}")
    return value


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    from keys.encoding import canonical
    return web.Response(body=canonical(data), status=status, headers=headers,
                        content_type="application/json")


def path_name(request: web.Request, key: str = "network") -> str:
    value = request.match_info[key]
    if not NAME_PATTERN.fullmatch(value):
        raise RelayError("no-network" if key == "network" else "not-found")
    return value


def path_id(request: web.Request, key: str, missing: str) -> str:
    value = request.match_info[key]
    if not ID_PATTERN.fullmatch(value):
        # Path-like or oversized ids never reach the store or the file system.
        raise RelayError(missing)
    return value


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,16}", text):
        raise RelayError("bad-request", f"query parameter {name} must be an integer")
    value = int(text)
    if not low <= value <= high:
        raise RelayError("bad-request", f"query parameter {name} must be between {low} and {high}")
    return value


def field_str(body: dict, name: str, pattern: re.Pattern | None = None, max_len: int = 256) -> str:
    value = body.get(name)
    if not isinstance(value, str) or len(value) > max_len or (pattern and not pattern.fullmatch(value)):
        raise RelayError("bad-request", f"field {name} is not valid")
    return value


def field_int(body: dict, name: str, low: int, high: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RelayError("bad-request", f"field {name} must be an integer between {low} and {high}")
    return value
