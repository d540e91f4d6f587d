"""What the relay writes to its log about requests it cannot parse (issue 10, part of item 2).

aiohttp logged such a request with a traceback quoting the raw header line, so a NUL in an
``Authorization`` header put the bearer token in the log. The relay now writes one short line
naming only the error class. Runs the real ``comity-relay serve`` and sends raw bytes.
"""

from __future__ import annotations

import json
import socket

import pytest

from .e2e_support import RelayProcess, wait_until

SECRET = "v1.c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQ.bWFj"


def _send(relay: RelayProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
        conn.sendall(data)
        return conn.recv(4096)


@pytest.fixture
def relay(tmp_path):
    process = RelayProcess(tmp_path / "relay", tmp_path / "logs")
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/relay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SECRET.encode() + b"\x00\r\n\r\n",
    b"GET /v1/relay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\nBad Header\r\n\r\n",
    b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + SECRET.encode()
    + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + SECRET.encode() + b"\r\n",
], ids=["nul-in-authorization", "malformed-header-line", "bad-chunk"])
def test_a_request_the_relay_cannot_parse_is_one_line_without_its_bytes(relay, request_bytes):
    answer = _send(relay, request_bytes)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.split()[1] == b"400"
    # The relay's own JSON error, not aiohttp's text, and nothing of the bytes sent.
    assert json.loads(body)["error"] == "bad-request"
    assert SECRET.encode() not in answer
    line = "refused a malformed HTTP request from 127.0.0.1"
    wait_until(lambda: line in relay.log_path.read_text(errors="replace"), 10, "the refusal line")
    relay.stop()
    log = relay.log_path.read_text(errors="replace")
    assert SECRET not in log and "c2VjcmV0" not in log
    assert "Traceback" not in log
    assert log.count(line) == 1
