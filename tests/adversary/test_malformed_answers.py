"""A relay that answers with the wrong shapes, or serves the same mailbox page for ever
(found in review of issue 9).

The attack: JSON values of the wrong type where the client expects a mailbox item, a fetch answer
or a status answer, to crash the client with a traceback; or the same mailbox page again and
again, to keep ``inbox`` (and every network ``watch`` serves) busy for ever.

The defence: every answer is checked in shape before use, and mailbox cursors must grow.

What the user is told: one ``error: the relay at URL sent a malformed ...`` line, never a
traceback, and the command ends.
"""

from __future__ import annotations

import json

import pytest

from ..e2e_support import assert_one_error

NETWORK = "refco"


@pytest.mark.parametrize("item", ["just a string", {"id": {"nested": 1}, "cursor": 5},
                                  {"id": "A" * 22, "cursor": "5"}, {"id": "../../x", "cursor": 5}])
def test_a_mailbox_item_of_the_wrong_shape_is_one_clear_error(world, item):
    mal, bob = world.mal, world.people["bob"]
    mal.rewrite("GET", r"/mailbox\?", lambda status, body, req: (200, json.dumps(
        {"messages": [item], "next": 5}).encode()))
    assert_one_error(bob.run("inbox", ok=False), contains="sent a malformed mailbox page")


def test_a_mailbox_page_served_again_and_again_ends_the_command(world):
    mal, alice, bob = world.mal, world.people["alice"], world.people["bob"]
    alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "one", input="body")

    def same_page(status, body, req):
        page = json.loads(body)
        if page["messages"]:
            same_page.first = same_page.first or page
        return (200, json.dumps(same_page.first).encode()) if same_page.first else None
    same_page.first = None
    mal.rewrite("GET", r"/mailbox\?", same_page)
    mal.on_request("POST", r"/collected$", lambda req: (200, b"{}"))   # never really collected
    assert_one_error(bob.run("inbox", ok=False, timeout=60), contains="a cursor that does not grow")


@pytest.mark.parametrize("answer", [[1, 2], {"envelope": "text"}, {"receipt": None}])
def test_a_fetch_answer_of_the_wrong_shape_is_one_clear_error(world, answer):
    mal, alice, bob = world.mal, world.people["alice"], world.people["bob"]
    alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "shape", input="body")
    mal.rewrite("GET", r"/messages/[A-Za-z0-9_-]+$", lambda status, body, req: (200, json.dumps(answer).encode()))
    assert_one_error(bob.run("inbox", ok=False), contains="sent a malformed message answer")
    mal.clear()
    bob.run("inbox")                                   # the message was left at the relay


def test_a_status_answer_of_the_wrong_shape_is_one_clear_error(world):
    mal, alice = world.mal, world.people["alice"]
    message_id = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "status shape",
                           input="body").stdout.strip()
    mal.rewrite("GET", r"/status$", lambda status, body, req: (200, b"[]"))
    assert_one_error(alice.run("status", message_id, ok=False), contains="sent a malformed status answer")
