"""End to end: the relay operator rotates the relay key; an administrator names the new key in
the membership log with ``comity network set-relay-key``; members follow it, and no one accepts
the old key again (docs/operations.md, "Rotating the relay key").

The real ``comity-relay serve`` (restarted on the same port and data, its ``relay.key`` moved
away as the procedure says) and the real ``comity`` commands, each member in its own home.
"""

from __future__ import annotations

import signal
import subprocess

from .e2e_support import (COMITY, COMMAND_TIMEOUT, Member, RelayProcess, approve, assert_one_error,
                          base_env, create_network, invite)

NETWORK = "rotation-net"


def test_a_rotated_relay_key_is_named_in_the_log_then_followed_and_the_old_one_refused(tmp_path):
    relay = RelayProcess(tmp_path / "relay", tmp_path / "logs")
    try:
        admin, bob = Member("secretariat", tmp_path / "secretariat"), Member("bob", tmp_path / "bob")
        create_network(relay, admin, NETWORK)
        bob.run("enroll", invite(admin, NETWORK, "bob"))
        approve(admin, NETWORK, bob)
        before = bob.run("send", "--network", NETWORK, "--to", "secretariat", "--subject", "before",
                         "--body", "sent under the first relay key", "--json").json()["id"]
        admin.run("inbox")
        old_fingerprint = relay.fingerprint

        # The operator moves relay.key away and restarts: the relay makes a new key.
        old_key = tmp_path / "relay.key.retired"
        (relay.data_dir / "relay.key").rename(old_key)
        relay.restart(signal.SIGTERM)
        assert relay.fingerprint != old_fingerprint
        assert_one_error(bob.run("members", "--network", NETWORK, ok=False),
                         contains="membership log does not name it")

        # Only an administrator names it, and only with the fingerprint the operator handed over.
        assert_one_error(admin.run("network", "set-relay-key", NETWORK, old_fingerprint, ok=False),
                         contains="you were given")
        assert_one_error(admin.run("network", "set-relay-key", NETWORK, "not a fingerprint", ok=False), 2)
        assert_one_error(bob.run("network", "set-relay-key", NETWORK, relay.fingerprint, ok=False),
                         contains="only an administrator")
        named = admin.run("network", "set-relay-key", NETWORK, relay.fingerprint)
        assert named.stdout.startswith(f"{NETWORK}: relay key {relay.fingerprint} named at log entry ")
        assert_one_error(admin.run("network", "set-relay-key", NETWORK, relay.fingerprint, ok=False),
                         contains="already names this relay key")

        # bob's client follows the signed log by itself; mail and old evidence keep working.
        assert [m["handle"] for m in bob.json("members", "--network", NETWORK)] == ["bob", "secretariat"]
        bundle = tmp_path / "before.json"
        bob.run("export", before, "--out", str(bundle))
        verified = subprocess.run(COMITY + ["verify", str(bundle)], capture_output=True, text=True,
                                  env=base_env(), stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
        assert verified.returncode == 0, verified.stdout
        assert f"(key {old_fingerprint}, named by the membership log)" in verified.stdout

        # Whoever still holds the old key, serving at the relay's address, is refused.
        (relay.data_dir / "relay.key").unlink()
        old_key.rename(relay.data_dir / "relay.key")
        relay.restart(signal.SIGTERM)
        assert relay.fingerprint == old_fingerprint
        assert_one_error(bob.run("members", "--network", NETWORK, ok=False),
                         contains="membership log does not name it")
    finally:
        relay.stop()
