"""Attack: a lying sender forges an evidence bundle (issue 9, break 4).

The attacker is a real member of a real network on the real relay (``comity-relay serve`` on
127.0.0.1), using its own keys, its real bundles and the client library. It tries three lies:

1. **Receipts from a key it made.** It signs back-dated ``submission-accepted`` and
   ``delivered`` receipts, and a relay status, with a fresh Ed25519 key. Defence: a relay
   signature counts only under a key the network's signed membership log names (genesis, then
   ``set-relay-key``), dated no later than the entry that replaced it. ``comity verify`` says
   ``FAIL ... not signed by this network's relay: relay key ... is not named by this network's
   membership log``; the documented jq check lists the forged key as named nowhere.
2. **Another subject and body under the relay's real receipts** (a message the recipient never
   acknowledged). Defence: the bundle carries the content key; verify decrypts the envelope the
   relay accepted and compares it with the signed payload. The user is told ``FAIL ... the
   envelope the relay accepted holds another message than the bundle's signed payload: the
   content was swapped``.
3. **An unfavourable record left out.** A ``not-collected`` receipt: the relay's signed status
   names the newest receipt of the chain, so the bundle is refused (``FAIL ... relay receipts
   were left out``). A ``rejected`` acknowledgement: the relay cannot vouch for end-to-end
   acknowledgements, so the bundle still verifies, but says per recipient ``NOT proven: whether
   carol's software acknowledged or refused it`` and ends ``the bundle verifies, but does not
   prove everything``, never a plain "verifies".
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.api import Comity
from keys.encoding import b64d, parse
from keys.evidence import bundle_bytes, make_bundle
from keys.identity import IdentityKey
from keys.receipts import evidence_hash, make_relay_receipt
from keys.relay_status import make_status

from ..e2e_support import (COMITY, COMMAND_TIMEOUT, Member, RelayProcess, Result, approve,
                           base_env, create_network, invite, wait_until)

NETWORK = "mla-net"
PEOPLE = ("liar", "bob", "carol", "dave")
#: a relay restarted on a loaded 2-core machine sweeps and answers within this
SWEEP_TIMEOUT = 60.0
#: the default retention of a network (keys.constants.DEFAULT_RETENTION) and a minute more
PAST_RETENTION = 30 * 86400 + 60
DOCS = Path(__file__).resolve().parents[2] / "docs" / "evidence.md"


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    """The keystores were made with the test-only cheap argon2 (e2e_support.base_env)."""
    monkeypatch.setenv("COMITY_INSECURE_FAST_KDF", "1")


@dataclass
class World:
    root: Path
    relay: RelayProcess
    members: dict[str, Member]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("forged-evidence")
    relay = RelayProcess(root / "relay", root / "logs")
    try:
        admin = Member("secretariat", root / "homes" / "secretariat")
        create_network(relay, admin, NETWORK)
        members = {h: Member(h, root / "homes" / h) for h in PEOPLE}
        for handle, member in members.items():
            member.run("enroll", invite(admin, NETWORK, handle))
            approve(admin, NETWORK, member)
        yield World(root, relay, members)
    finally:
        relay.stop()


# -- what the liar does -------------------------------------------------------------------------


def send(sender: Member, to: list[str], subject: str, body: str) -> str:
    args = ["send", "--network", NETWORK, "--subject", subject, "--body", body, "--json"]
    for handle in to:
        args += ["--to", handle]
    return sender.run(*args).json()["id"]


def export(sender: Member, message_id: str, path: Path) -> dict:
    sender.run("export", message_id, "--out", str(path))
    return parse(path.read_bytes())


def liar_key(liar: Member) -> IdentityKey:
    """The liar's own identity key, read from its keystore with its passphrase."""
    client = Comity.at(liar.home)
    try:
        client.unlock(liar.passphrase)
        return client.identity
    finally:
        asyncio.run(client.close())


def rebuilt(bundle: dict, key: IdentityKey, path: Path, **changes) -> Path:
    """The bundle with ``changes``, signed again with the liar's key and written to ``path``."""
    fields = {name: bundle[name] for name in ("message_id", "envelope", "signed_payload", "evidence",
                                              "relay_status", "log", "exported_by", "exported_at")}
    fields["content_key"] = b64d(bundle["content_key"])
    fields.update(changes)
    path.write_bytes(bundle_bytes(make_bundle(network=bundle["network"]["name"], exporter=key, **fields)))
    return path


def relay_receipts(bundle: dict) -> list[dict]:
    return [r for r in bundle["evidence"] if "relay_key" in r]


def verify(path: Path) -> Result:
    """``comity verify`` as a court expert runs it: no COMITY_HOME, no relay."""
    done = subprocess.run(COMITY + ["verify", str(path)], capture_output=True, text=True,
                          env=base_env(), stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    assert "Traceback" not in done.stderr, done.stderr
    return Result(["verify", str(path)], done.returncode, done.stdout, done.stderr)


def refused(path: Path, reason: str) -> str:
    result = verify(path)
    assert result.status == 1, result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1] == "the bundle does NOT verify", lines
    failing = [line for line in lines if line.startswith("FAIL ")]
    assert len(failing) == 1 and reason in failing[0], lines
    assert not any(line.startswith("for ") for line in lines), lines      # no per-recipient claims
    return failing[0]


def accepted(path: Path) -> str:
    result = verify(path)
    assert result.status == 0, result.stdout
    return result.stdout


# -- 1. receipts signed with a key the sender made ----------------------------------------------


def test_receipts_forged_with_a_key_the_sender_made_are_refused(world):
    liar, bob = world.members["liar"], world.members["bob"]
    message_id = send(liar, ["bob"], "MLA 2026/7: request", "hearing of a witness")
    bob.run("inbox")
    real = export(liar, message_id, world.root / "real-7.json")
    assert accepted(world.root / "real-7.json").endswith("the bundle verifies\n")

    # A month earlier than the truth, under a key of its own making.
    own, shift, records, prev = IdentityKey.generate(), -30 * 86400, [], None
    for receipt in relay_receipts(real):
        extra = ({"recipients": receipt["recipients"]} if "recipients" in receipt
                 else {"recipient": receipt["recipient"]})
        record = make_relay_receipt(own, receipt["kind"], network=receipt["network"],
                                    message_id=message_id, envelope_hash=receipt["envelope_hash"],
                                    sender="liar", time=receipt["time"] + shift, prev=prev, **extra)
        records.append(record)
        prev = evidence_hash(record)
    status = real["relay_status"]
    statement = make_status(own, network=status["network"], message_id=message_id,
                            envelope_hash=status["envelope_hash"], sender="liar",
                            time=status["time"] + shift, chain_head=prev, log_head=status["log_head"])
    key = liar_key(liar)
    forged = rebuilt(real, key, world.root / "forged-7.json", evidence=records, relay_status=statement)
    line = refused(forged, "the relay's status statement is not signed by this network's relay")
    assert "is not named by this network's membership log" in line
    # The same forged receipts beside the relay's genuine status: refused for the receipts.
    beside = rebuilt(real, key, world.root / "forged-7b.json", evidence=records)
    refused(beside, "submission-accepted receipt is not signed by this network's relay")

    # The expert's jq check from docs/evidence.md, run verbatim: the forged key is named nowhere.
    docs = DOCS.read_text(encoding="utf-8")
    start = docs.index("jq -r '.log[] | select(.kind == \"genesis\"")
    script = docs[start:docs.index("\n```", start)]
    listed = subprocess.run(["bash", "-c", script], env={**base_env(), "B": str(forged)},
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True).stdout
    named = {line.rsplit(": ", 1)[1] for line in listed.splitlines() if line.startswith("named at ")}
    used = {line.rsplit(": ", 1)[1] for line in listed.splitlines() if not line.startswith("named at ")}
    assert used == {own.public.b64()} and not used & named, listed


# -- 2. another subject and body under the relay's real receipts ------------------------------------


def test_content_swapped_under_real_relay_receipts_is_refused(world):
    liar, carol = world.members["liar"], world.members["carol"]
    message_id = send(liar, ["carol"], "MLA 2026/8: request", "freeze the account")
    carol.run("inbox", "--no-ack")             # delivered, never acknowledged: no payload hash signed
    real = export(liar, message_id, world.root / "real-8.json")
    assert [r["kind"] for r in real["evidence"]] == ["submission-accepted", "delivered"]

    key = liar_key(liar)
    original = real["signed_payload"]["payload"]
    payload = dict(original, body="we withdraw the request",
                   headers=dict(original["headers"], subject="MLA 2026/8: withdrawn"))
    swapped = {"payload": payload, "sig": key.sign_b64("message", payload)}
    forged = rebuilt(real, key, world.root / "swapped-8.json", signed_payload=swapped)
    refused(forged, "the envelope the relay accepted holds another message than the bundle's signed "
                    "payload: the content was swapped")


# -- 3. an unfavourable record left out --------------------------------------------------------------


def tamper_with_ciphertext(relay: RelayProcess, message_id: str) -> None:
    """Alter the stored envelope, so the recipient refuses what it receives."""
    with relay.db() as conn:
        (text,) = conn.execute("SELECT envelope FROM envelopes WHERE network = ? AND message_id = ?",
                               [NETWORK, message_id]).fetchone()
        ciphertext = json.loads(text)["ciphertext"]
        i = len(ciphertext) // 2
        changed = ciphertext[:i] + ("A" if ciphertext[i] != "A" else "B") + ciphertext[i + 1:]
        conn.execute("UPDATE envelopes SET envelope = ? WHERE network = ? AND message_id = ?",
                     [text.replace(ciphertext, changed), NETWORK, message_id])


def test_a_dropped_rejection_is_reported_as_not_proven(world):
    liar, carol = world.members["liar"], world.members["carol"]
    message_id = send(liar, ["carol"], "MLA 2026/9: request", "search the premises")
    tamper_with_ciphertext(world.relay, message_id)
    carol.run("inbox")                          # refuses it and signs a rejection
    real = export(liar, message_id, world.root / "real-9.json")
    shown = accepted(world.root / "real-9.json")
    assert "for carol: proven: carol's software refused what it received at " in shown
    assert "reason decryption-failed" in shown and shown.endswith("the bundle verifies\n")

    without = [r for r in real["evidence"] if r["kind"] != "rejected"]
    forged = rebuilt(real, liar_key(liar), world.root / "dropped-rejection-9.json", evidence=without)
    shown = accepted(forged)
    assert "for carol: proven: delivered to carol's authenticated session at " in shown
    assert "for carol: NOT proven: whether carol's software acknowledged or refused it" in shown
    assert shown.endswith("the bundle verifies, but does not prove everything: see the lines marked "
                          "NOT proven\n"), shown
    assert "acknowledged" not in shown.replace("acknowledged or refused", "")


def test_a_dropped_not_collected_receipt_is_refused(world):
    liar, bob = world.members["liar"], world.members["bob"]
    message_id = send(liar, ["bob", "dave"], "MLA 2026/10: request", "transfer of proceedings")
    bob.run("inbox")                            # dave never collects
    early = export(liar, message_id, world.root / "early-10.json")
    # Retention runs out: the relay's sweep (at its restart) signs dave's not-collected receipt.
    with world.relay.db() as conn:
        conn.execute("UPDATE messages SET accepted_at = accepted_at - ? WHERE network = ? AND message_id = ?",
                     [PAST_RETENTION, NETWORK, message_id])
    world.relay.restart(signal.SIGTERM)
    wait_until(lambda: liar.json("status", message_id)["recipients"]["dave"]["not_collected"],
               SWEEP_TIMEOUT, "the relay's not-collected receipt for dave")
    real = export(liar, message_id, world.root / "real-10.json")
    shown = accepted(world.root / "real-10.json")
    assert "for dave: proven: not collected by dave: retention ran out at " in shown

    key = liar_key(liar)
    without = [r for r in real["evidence"] if r["kind"] != "not-collected"]
    refused(rebuilt(real, key, world.root / "dropped-10.json", evidence=without),
            "relay receipts were left out")
    # With the relay's older status instead, the bundle proves only the state at that time, and
    # says so: dave had not been delivered to as of then, not that dave received it.
    stale = rebuilt(real, key, world.root / "stale-10.json", evidence=without,
                    relay_status=early["relay_status"])
    shown = accepted(stale)
    assert "for dave: proven: not delivered to dave as of " in shown and "delivered to dave's" not in shown
