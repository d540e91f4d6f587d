"""A relay key retired with ``comity-relay rotate-key --retire``, in the hands of an attacker.

The attack: someone copied ``relay.key`` before the operator rotated it (a leaked backup, a
compromised host) and, after the rotation and the retirement, serves at the relay's address
(here: the proxy in front of the real relay, holding the old key). It presents the old key,
signs log heads and receipts with it, dated now.

The defence: the network's log names the new key from the administrator's ``set-relay-key``
entry on, and a statement under a replaced key counts only if dated no later than that entry
(docs/protocol.md §4, "The relay key"). Clients that pinned the new key refuse a relay
presenting only the old one; a head or receipt the old key signs now is refused wherever it
appears.

What it still can do (documented, docs/operations.md): sign statements dated before the
entry that replaced the key, which nothing offline tells from genuine ones.

What the user is told: ``error: the relay at URL has key OLD, not the pinned NEW, and the
refco membership log does not name it`` (with a hint naming ``comity network set-relay-key``),
``error: the relay's receipt does not verify against the relay keys the membership log names:
... was replaced at log entry N`` on ``comity send``, and a head signed now by the old key is
refused: ``error: the relay's signed refco log head does not verify against the relay key the
membership log names``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from keys.encoding import b64d, canonical, parse
from keys.errors import LogError
from keys.identity import format_fingerprint
from keys.log import LogVerifier
from keys.log_head import make_log_head
from keys.receipts import make_relay_receipt

from ..e2e_support import COMITY_RELAY, COMMAND_TIMEOUT, assert_one_error, base_env

NETWORK = "refco"
PEOPLE = ["alice", "bob"]


def _relay_cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(COMITY_RELAY + list(args), capture_output=True, text=True, env=base_env(),
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def rotated(_module_world):
    """The operator rotated the key, the administrator named the new one, alice and bob
    followed, and the old key was retired. The proxy still holds the old key."""
    world = _module_world
    mal, people = world.mal, world.people
    old = mal.key
    sent = people["alice"].run("send", "--network", NETWORK, "--to", "bob", "--subject", "before",
                               "--body", "under the old key", "--json").json()["id"]
    people["bob"].run("inbox")
    new = _relay_cli("rotate-key", "--data-dir", str(mal.relay.data_dir)).stdout.strip()
    people["secretariat"].run("network", "set-relay-key", NETWORK, new)
    for handle in PEOPLE:
        people[handle].run("members", "--network", NETWORK)       # each client follows the log
    _relay_cli("rotate-key", "--retire", "--data-dir", str(mal.relay.data_dir))
    return {"old": old, "new": new, "before": sent}


def _fp(key) -> str:
    return format_fingerprint(key.public.fingerprint())


def _log(mal) -> tuple[LogVerifier, list[dict]]:
    """The network's log as the relay stores it, verified from its genesis."""
    with mal.relay.db() as db:
        (genesis_hash,) = db.execute("SELECT genesis_hash FROM networks WHERE name = ?",
                                     [NETWORK]).fetchone()
        entries = [parse(text) for (text,) in db.execute(
            "SELECT entry FROM log_entries WHERE network = ? ORDER BY seq", [NETWORK])]
    verifier = LogVerifier(b64d(genesis_hash))
    verifier.extend(entries)
    return verifier, entries


def test_presenting_only_the_retired_key_is_refused(world, rotated):
    old = rotated["old"]

    def present_old(status, body, req):
        return status, canonical({"relay_key": old.public.b64(), "fingerprint": _fp(old),
                                  "relay_keys": [old.public.b64()], "protocol": 1})
    world.mal.rewrite("GET", r"^/v1/relay$", present_old)
    error = assert_one_error(world.people["alice"].run("members", "--network", NETWORK, ok=False),
                             contains="membership log does not name it")
    assert error == (f"error: the relay at {world.mal.url} has key {_fp(old)}, not the pinned "
                     f"{rotated['new']}, and the {NETWORK} membership log does not name it")


def test_a_head_signed_now_by_the_retired_key_is_refused(world, rotated):
    old = rotated["old"]

    def resign_head(status, body, req):
        page = json.loads(body)
        head = page["signed_head"]
        page["signed_head"] = make_log_head(old, network=b64d(head["network"]), seq=head["seq"],
                                            head_hash=b64d(head["hash"]), time=head["time"])
        return status, canonical(page)
    world.mal.rewrite("GET", r"/log\?", resign_head)
    result = world.people["bob"].run("members", "--network", NETWORK, ok=False)
    assert assert_one_error(result) == (
        f"error: the relay's signed {NETWORK} log head does not verify against the relay key the "
        "membership log names: it names a key the membership log does not name as the relay's")


def test_a_receipt_signed_now_by_the_retired_key_is_refused(world, rotated):
    old = rotated["old"]

    def resign_receipt(status, body, req):
        receipt = json.loads(body)["receipt"]
        fields = {k: receipt[k] for k in ("network", "message_id", "sender", "time",
                                          "recipients", "log_seq")}
        forged = make_relay_receipt(old, receipt["kind"], envelope_hash=b64d(receipt["envelope_hash"]),
                                    **fields)
        return status, canonical({"receipt": forged})
    world.mal.rewrite("POST", r"/messages$", resign_receipt)
    result = world.people["alice"].run("send", "--network", NETWORK, "--to", "bob", "--subject",
                                       "after", "--body", "under the new key", ok=False)
    error = assert_one_error(result, contains="the relay's receipt does not verify")
    assert "was replaced at log entry" in error


def test_what_the_retired_key_still_vouches_for(world, rotated):
    """Dated at or before the entry that replaced it, yes (nothing offline tells a back-dated
    statement from a real one); dated after it, never. The secret is gone from the relay."""
    old = rotated["old"]
    log, entries = _log(world.mal)
    (replacing,) = [e for e in entries if e["kind"] == "set-relay-key"]
    replaced_at = replacing["time"]
    log.check_relay_key(old.public, replaced_at)
    with pytest.raises(LogError) as caught:
        log.check_relay_key(old.public, replaced_at + 1)
    assert caught.value.reason == "retired-relay-key"
    assert not (world.mal.relay.data_dir / "relay.key.previous").exists()
    status = _relay_cli("rotate-key", "--status", "--data-dir", str(world.mal.relay.data_dir))
    assert status.stdout == f"{NETWORK}\tnewest\t{rotated['new']}\n"
    assert old.seed().hex() not in (world.mal.relay.data_dir / "relay.key").read_text()
