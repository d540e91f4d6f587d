"""An unsigned push event cannot stop ``comity watch``.

The attack: the relay (or anyone on its push channel) sends ``{"type": "revoked"}`` on a
member's event stream. Before, ``comity watch`` took it at its word and stopped with "you were
removed", so the relay could silently end a member's watcher and its acknowledgements.

The defence: an event is only a hint. On ``revoked`` the watcher connects again, which fetches
and verifies the membership log from the pinned genesis; it stops only if the verified log says
the member was removed or its key replaced (or the relay refuses the member outright, which a
relay can always do); otherwise it keeps watching.

What the user is told: ``watch: refco: the relay said you were removed, but the verified
membership log says you are a member: still watching``; after a real removal, the watcher
stops with one ``error:`` line and exit status 1.
"""

from __future__ import annotations

from ..e2e_support import kill_group, wait_until
from .conftest import build_network

NETWORK = "refco"
#: seconds the watcher may take to connect, react to an event or collect a message
WATCH_TIMEOUT = 30.0


def test_a_forged_revoked_event_does_not_stop_the_watcher(malicious_relay, tmp_path):
    mal = malicious_relay
    people = build_network(mal, tmp_path, "secretariat", ["alice", "bob"], network=NETWORK)
    admin, alice, bob = people["secretariat"], people["alice"], people["bob"]
    log = tmp_path / "watch.log"
    watcher = bob.spawn("watch", log=log)
    try:
        wait_until(lambda: mal.open_event_streams() >= 1, WATCH_TIMEOUT, "the watcher's event stream")
        mal.push(["not", "an", "event"])        # no event at all: ignored
        assert mal.push({"type": "revoked"}) == 1
        wait_until(lambda: "the verified membership log says you are a member: still watching"
                   in log.read_text(), WATCH_TIMEOUT, "the watcher to check the log and carry on")
        assert watcher.poll() is None

        sent = alice.run("send", "--network", NETWORK, "--to", "bob", "--subject", "still there?",
                         input="a request").stdout.strip()
        wait_until(lambda: sent in log.read_text(), WATCH_TIMEOUT, "the watcher to collect the message")
        assert watcher.poll() is None

        # A real removal is in the verified log: then the watcher stops, with one error line.
        admin.run("remove", "--network", NETWORK, "bob")
        wait_until(lambda: watcher.poll() is not None, WATCH_TIMEOUT, "the watcher to stop")
        assert watcher.returncode == 1, log.read_text()
        errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in log.read_text(), log.read_text()
    finally:
        kill_group(watcher)
