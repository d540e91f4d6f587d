"""Helpers for the withheld-entries and superseded-key attacks (tests/adversary/test_withheld_entries.py,
tests/adversary/test_superseded_key.py): the malicious relay shows a member the log of its choosing
and signs the head of what it shows, as a relay holding its key would."""

from __future__ import annotations

import json
import re
import time
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from keys.encoding import b64d, parse
from keys.errors import KeysError
from keys.log import entry_hash
from keys.log_head import make_log_head


def sign_head(mal, page: dict, seq: int, head_hash: bytes, at: int | None = None) -> dict:
    """Make ``page`` (a parsed log page) end at ``seq`` with a head signed as the relay."""
    page["signed_head"] = make_log_head(
        mal.key, network=b64d(page["signed_head"]["network"]), seq=seq, head_hash=head_hash,
        time=int(time.time()) if at is None else at)
    page["head"] = {"seq": seq, "hash": page["signed_head"]["hash"]}
    return page


def stored_hash(mal, network: str, seq: int) -> bytes:
    """The hash of entry ``seq`` as the real relay behind the proxy stored it."""
    with mal.relay.db() as db:
        row = db.execute("SELECT entry_hash FROM log_entries WHERE network = ? AND seq = ?",
                         [network, seq]).fetchone()
    return b64d(row[0])


def requester(req) -> str | None:
    """The handle a request's bearer token names (the relay reads its own tokens' claims)."""
    token = req.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    try:
        return parse(b64d(token.split(".")[1]))["h"]
    except (IndexError, KeysError, KeyError, TypeError):
        return None


def hide_from(mal, network: str, first: int, *, at: Callable[[], int] | None = None,
              only: str | None = None):
    """A rewrite rule for ``GET .../log``: entries from ``first`` on do not exist, and the head,
    signed as the relay and dated ``at()`` (default: now), says the log ends before them; for
    the member ``only`` if given, else for everyone. A member that already holds entry
    ``first`` (it asks for later ones) is served the truth: it would see the head go back."""
    def rule(status, body, req):
        since = parse_qs(urlsplit(req.path).query).get("since", ["0"])[0]
        if status != 200 or int(since) > first or (only is not None and requester(req) != only):
            return None
        page = json.loads(body)
        if page["signed_head"]["seq"] < first:
            return None
        page["entries"] = [e for e in page["entries"] if e["seq"] < first]
        page["more"] = False
        sign_head(mal, page, first - 1, stored_hash(mal, network, first - 1),
                  None if at is None else at())
        return status, json.dumps(page).encode()
    return rule


def show_instead(mal, other: dict):
    """A rewrite rule for ``GET .../log``: serve ``other`` at its seq (a fork), head signed."""
    def rule(status, body, req):
        page = json.loads(body)
        if not page["entries"] or page["entries"][0]["seq"] <= other["seq"]:
            page["entries"] = [e for e in page["entries"] if e["seq"] < other["seq"]] + [other]
            page["more"] = False
            sign_head(mal, page, other["seq"], entry_hash(other))
        return status, json.dumps(page).encode()
    return rule


def deliver_forged(mal, to: str, envelope: dict, *, submission: dict | None, delivery: dict) -> None:
    """The relay lists ``envelope`` first in ``to``'s mailbox (once), hands it over with these
    receipts, and pretends to record its collection: mail the real relay never accepted."""
    state = {"listed": False}
    message_id = envelope["id"]

    def listing(status, body, req):
        after = parse_qs(urlsplit(req.path).query).get("after", ["0"])[0]
        if state["listed"] or status != 200 or requester(req) != to or after != "0":
            return None
        state["listed"] = True
        page = json.loads(body)
        # After the real items, with a cursor beyond them: a client refuses cursors that do not grow.
        page["messages"].append({"cursor": 10 ** 12, "id": message_id, "sender": envelope["sender"],
                                 "size": len(json.dumps(envelope)), "accepted_at": delivery["time"]})
        return status, json.dumps(page).encode()

    answer = {"envelope": envelope, "receipt": delivery, "submission": submission, "chain": []}
    mal.rewrite("GET", r"/mailbox", listing)
    mal.on_request("GET", rf"/messages/{re.escape(message_id)}$",
                   lambda req: (200, json.dumps(answer).encode()))
    mal.on_request("POST", rf"/messages/{re.escape(message_id)}/collected$",
                   lambda req: (200, b'{"collected":true,"deleted":true}'))
