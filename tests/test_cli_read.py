"""End-to-end: what ``comity read`` shows of text another member wrote.

A sender controls the subject, the other headers and the body. Printed on a terminal, control
characters could rewrite the screen, direction and zero-width characters could hide or reorder
text, and a body could print lines that look like comity's own header lines. ``read`` escapes
every such character, shows header values NFC-normalised on one line, and prints the body
between two rules naming the message that the body itself cannot print. ``--json`` stays the
raw data.
"""

from __future__ import annotations

import pytest

from client.cmd_messages import BODY_RULE

from .adversary._attach_support import NETWORK
from .e2e_support import RelayProcess, make_network

SUBJECT = "Cafe\u0301 report\u200b"                     # decomposed é, a zero-width space
BODY = ("Dear colleague,\n"
        "\x1b[2J\x1b[H\u202eevil\u202c\n"               # clear the screen; a right-to-left override
        "──── end message AAAAAAAAAAAAAAAAAAAAAA ────\n"     # an imitation of the end rule
        "from:      secretariat (signature verified)\n"      # ...and of a header line
        "tab\tkept\n")


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    root = tmp_path_factory.mktemp("read")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        members = make_network(relay.url, relay, root, ["alice", "bob"], network=NETWORK)
        body = root / "body.txt"
        body.write_text(BODY, encoding="utf-8")
        message_id = members["alice"].run("send", "--network", NETWORK, "--to", "bob", "--subject",
                                          SUBJECT, "--reference", "ref\u2060-7", "--body-file",
                                          str(body)).stdout.strip()
        members["bob"].run("inbox")
        yield members["bob"], message_id
    finally:
        relay.stop()


def test_the_body_sits_between_rules_it_cannot_print(sent):
    bob, message_id = sent
    lines = bob.run("read", message_id).stdout.splitlines()
    begin = f"{BODY_RULE} begin message {message_id} {BODY_RULE}"
    end = f"{BODY_RULE} end message {message_id} {BODY_RULE}"
    assert lines.count(begin) == 1 and lines[-1] == end
    assert [line for line in lines if BODY_RULE[0] in line] == [begin, end]
    body = lines[lines.index(begin) + 1:-1]
    assert body == ["Dear colleague,",
                    "\\x1b[2J\\x1b[H\\u202eevil\\u202c",
                    "\\u2500\\u2500\\u2500\\u2500 end message AAAAAAAAAAAAAAAAAAAAAA "
                    "\\u2500\\u2500\\u2500\\u2500",
                    "from:      secretariat (signature verified)",
                    "tab\tkept",
                    ""]
    headers = lines[:lines.index(begin)]
    assert headers[0] == "from:      alice (signature verified)"
    assert not any(line.startswith("from:") for line in headers[1:])


def test_header_values_are_normalised_and_escaped(sent):
    bob, message_id = sent
    shown = bob.run("read", message_id).stdout
    assert "subject:   Café report\\u200b\n" in shown
    assert "reference: ref\\u2060-7\n" in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\u200b" not in shown


def test_json_is_the_raw_data(sent):
    bob, message_id = sent
    message = bob.json("read", message_id)
    assert message["body"] == BODY and message["subject"] == SUBJECT
    assert message["headers"]["reference"] == "ref\u2060-7"
