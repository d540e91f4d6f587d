"""A relay cannot make the client read an answer of any size, or inflate one.

The attack: the relay answers a JSON request with more bytes than any legitimate answer holds
(to exhaust memory), or with a compressed body (a few kilobytes of gzip can inflate to
gigabytes). Before, the client read whatever came, and aiohttp asked for gzip and inflated it.

The defence: the client reads at most ``MAX_ANSWER_BYTES`` (an envelope at the protocol's
64 MiB ceiling as base64, plus 4 MiB for the rest of the largest answer) and refuses a longer one
as soon as its announced length or the bytes read pass the limit; it asks for
``Accept-Encoding: identity``, never inflates, and refuses any other ``Content-Encoding``.

What the user is told: ``error: the relay at URL sent an answer larger than N bytes, the most it
may send: refused``, or ``error: the relay at URL sent an encoded answer (Content-Encoding:
gzip): refused``.
"""

from __future__ import annotations

import gzip
import urllib.request

from client.relay_client import MAX_ANSWER_BYTES

from ..e2e_support import assert_one_error
from .conftest import MaliciousRelay

NETWORK = "refco"


PEOPLE = ["alice"]

def _relay_info(mal: MaliciousRelay) -> bytes:
    """The honest relay's own answer to GET /v1/relay."""
    with urllib.request.urlopen(mal.relay.url + "/v1/relay", timeout=10) as response:
        return response.read()


def test_an_answer_larger_than_any_legitimate_one_is_refused(world):
    mal, people = world.mal, world.people
    honest = _relay_info(mal)
    # Still the relay's real answer, with one more field: only its size is wrong.
    padded = honest[:-1] + b',"padding":"' + b"x" * MAX_ANSWER_BYTES + b'"}'
    mal.on_request("GET", r"^/v1/relay$", lambda req: (200, padded, {"Content-Type": "application/json"}))
    result = people["alice"].run("members", "--network", NETWORK, ok=False)
    assert_one_error(result, contains=f"the relay at {mal.url} sent an answer larger than "
                                      f"{MAX_ANSWER_BYTES} bytes, the most it may send: refused")


def test_a_compressed_answer_is_refused_and_never_asked_for(world):
    mal, people = world.mal, world.people
    asked = []

    def record(req):
        asked.append(req.headers.get("Accept-Encoding"))
        return None                                     # forwarded as is
    mal.on_request("*", r"^/v1/", record)
    assert people["alice"].run("members", "--network", NETWORK).status == 0
    assert asked and set(asked) == {"identity"}

    mal.clear()
    compressed = gzip.compress(_relay_info(mal))
    mal.on_request("GET", r"^/v1/relay$", lambda req: (
        200, compressed, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    result = people["alice"].run("members", "--network", NETWORK, ok=False)
    assert_one_error(result, contains=f"the relay at {mal.url} sent an encoded answer "
                                      "(Content-Encoding: gzip): refused")
