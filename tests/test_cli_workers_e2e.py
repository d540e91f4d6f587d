"""End-to-end against ``comity-relay serve --workers 2``: the commands work unchanged.

Each ``comity`` command opens its own connections, so over a run the
challenge, token, log, message, blob and push requests of one member land on
both workers in no fixed order. The flow: ``network create``, two members
enroll at the same time and are approved; bob runs ``comity watch --exec``;
alice sends him a request with a 3 MiB attachment; the watcher registers it;
``read`` saves the attachment intact and ``status`` shows the delivery and
bob's acknowledgement; then
the administrator removes alice, and her next ``send`` is refused whichever
worker it reaches.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .e2e_support import (Member, RelayProcess, approve, assert_one_error, create_network, invite,
                          kill, random_file, run_together, same_bytes, wait_until)

NETWORK = "sahel"
#: seconds the watcher may take to see and register a message
WATCH_TIMEOUT = 30.0
HOOK = """\
import json, sys
with open(sys.argv[1], "a", encoding="utf-8") as fh:
    fh.write(json.load(sys.stdin)["id"] + "\\n")
"""


def test_the_commands_work_against_a_relay_with_two_workers(tmp_path):
    relay = RelayProcess(tmp_path / "relay", tmp_path / "logs", args=("--workers", "2"))
    watcher = None
    try:
        admin = Member("secretariat", tmp_path / "homes" / "secretariat")
        create_network(relay, admin, NETWORK, name="Sahel platform", country="ML")
        members = {h: Member(h, tmp_path / "homes" / h) for h in ("alice", "bob")}
        codes = {h: invite(admin, NETWORK, h, "--name", h.title(), "--country", "NE")
                 for h in members}
        run_together(*((members[h], ["enroll", codes[h]]) for h in members))
        for handle in members:
            approve(admin, NETWORK, members[handle])
        alice, bob = members["alice"], members["bob"]

        hook, record = tmp_path / "register.py", tmp_path / "registered.txt"
        hook.write_text(HOOK, encoding="utf-8")
        log = tmp_path / "watch.log"
        watcher = bob.spawn("watch", "--exec",
                            " ".join(shlex.quote(str(p)) for p in (sys.executable, hook, record)),
                            log=log)
        wait_until(lambda: "watch: waiting for messages" in log.read_text(), WATCH_TIMEOUT,
                   "the watcher to connect")

        annex = random_file(tmp_path / "annex.bin", 3 * 1024 * 1024)
        sent = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "MLA 7/2026",
                         "--attach", str(annex), "--json", input="Please find the annex.").json()
        wait_until(lambda: record.exists() and sent["id"] in record.read_text().split(),
                   WATCH_TIMEOUT, "the watcher to register the message")

        saved = tmp_path / "saved"
        message = bob.run("read", sent["id"], "--save-attachments", str(saved), "--json").json()
        assert message["body"] == "Please find the annex." and message["verified"] is True
        assert same_bytes(Path(message["attachments"][0]["saved_to"]), annex)
        bob_status = alice.json("status", sent["id"])["recipients"]["bob"]
        assert bob_status["delivered"] is not None, bob_status      # the relay's signed receipt
        assert bob_status["acknowledged"] is not None, bob_status   # the watcher's signed ack

        admin.run("remove", "--network", NETWORK, "alice")
        refused = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "after",
                            input="x", ok=False)
        assert_one_error(refused)
    finally:
        if watcher is not None:
            kill(watcher)
        relay.stop()
    assert relay.process.returncode == 0
