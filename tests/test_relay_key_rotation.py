"""``comity-relay rotate-key``: a relay key rotation without downtime (docs/operations.md,
"Rotating the relay key"), and the commands that refuse a folder holding no relay.

First the command against a data folder (what it writes, refuses and destroys), then one
whole rotation end to end: the real ``comity-relay serve --workers 2`` never restarted, the
real ``comity`` commands, each member in its own home.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from relay.relaykey import PREVIOUS_KEY_FILE, RELAY_KEY_FILE, load_relay_keys

from .e2e_support import (COMITY, COMITY_RELAY, COMMAND_TIMEOUT, Member, RelayProcess, approve,
                          assert_one_error, base_env, create_network, invite)
from .test_relay_tokens import _run_relay_cli, _tree

NETWORK = "rotation-net"
OTHER = "other-net"


def _fingerprint(key) -> str:
    from keys.identity import format_fingerprint
    return format_fingerprint(key.public.fingerprint())


@pytest.fixture
def prepared(tmp_path):
    folder = tmp_path / "data"
    result = _run_relay_cli("init", "--data-dir", str(folder))
    assert result.exit_code == 0, result.stderr
    return folder


# -- the command on a data folder -----------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["--status"], ["--retire"], ["--retire", "--force"]])
@pytest.mark.parametrize("layout", ["missing", "empty", "unrelated"])
def test_rotate_key_refuses_a_folder_with_no_relay_and_creates_nothing(tmp_path, layout, args):
    folder = tmp_path / "data"
    if layout != "missing":
        folder.mkdir()
    if layout == "unrelated":
        (folder / "relay.key").write_text("a file that happens to have the name\n")
    before = _tree(tmp_path)
    result = _run_relay_cli("rotate-key", *args, "--data-dir", str(folder))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {folder} holds no comity relay (no relay.key / relay.db)\n"
                                    "hint: start the relay once with 'comity-relay serve")
    assert _tree(tmp_path) == before


def test_rotate_key_keeps_the_old_key_beside_the_new_one_until_retired(prepared):
    (first,) = load_relay_keys(prepared)
    rotated = _run_relay_cli("rotate-key", "--data-dir", str(prepared))
    assert rotated.exit_code == 0, rotated.stderr
    held = load_relay_keys(prepared)
    assert [k.public for k in held][1:] == [first.public]
    assert rotated.stdout == _fingerprint(held[0]) + "\n"      # the new key's fingerprint, alone
    for name in (RELAY_KEY_FILE, PREVIOUS_KEY_FILE):
        assert (prepared / name).stat().st_mode & 0o777 == 0o600
    # One rotation at a time: a second one first needs the previous key retired.
    again = _run_relay_cli("rotate-key", "--data-dir", str(prepared))
    assert again.exit_code == 1 and again.stdout == ""
    assert f"still holds the key before the last rotation: {_fingerprint(first)}" in again.stderr
    assert [k.public for k in load_relay_keys(prepared)] == [k.public for k in held]
    # No network names the previous key: --retire destroys it.
    retired = _run_relay_cli("rotate-key", "--retire", "--data-dir", str(prepared))
    assert retired.exit_code == 0, retired.stderr
    assert retired.stdout == _fingerprint(first) + "\n"
    assert not (prepared / PREVIOUS_KEY_FILE).exists()
    assert [k.public for k in load_relay_keys(prepared)] == [held[0].public]
    nothing = _run_relay_cli("rotate-key", "--retire", "--data-dir", str(prepared))
    assert nothing.exit_code == 0 and "nothing to retire" in nothing.stderr


def test_a_rotation_cut_short_leaves_whole_keys_and_goes_on(prepared):
    (first,) = load_relay_keys(prepared)
    # The crash point: relay.key.previous linked, relay.key not yet replaced.
    os.link(prepared / RELAY_KEY_FILE, prepared / PREVIOUS_KEY_FILE)
    assert [k.public for k in load_relay_keys(prepared)] == [first.public]   # one key, held once
    # Retiring that leftover must not destroy relay.key, its other name.
    assert _run_relay_cli("rotate-key", "--retire", "--data-dir", str(prepared)).exit_code == 0
    assert [k.public for k in load_relay_keys(prepared)] == [first.public]
    os.link(prepared / RELAY_KEY_FILE, prepared / PREVIOUS_KEY_FILE)
    assert _run_relay_cli("rotate-key", "--data-dir", str(prepared)).exit_code == 0
    held = load_relay_keys(prepared)
    assert len(held) == 2 and held[1].public == first.public


def test_status_and_retire_need_no_conflicting_options(prepared):
    for args in (["--status", "--retire"], ["--force"], ["--status", "--force"]):
        result = _run_relay_cli("rotate-key", *args, "--data-dir", str(prepared))
        assert result.exit_code == 2, args
        assert result.stderr.startswith("error: use --status or --retire")


# -- one whole rotation, end to end ---------------------------------------------------------------

def _relay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(COMITY_RELAY + list(args), capture_output=True, text=True, env=base_env(),
                          stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)


def _verify(bundle) -> str:
    done = subprocess.run(COMITY + ["verify", str(bundle)], capture_output=True, text=True,
                          env=base_env(), stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _status(relay: RelayProcess) -> dict[str, str]:
    done = _relay_cli("rotate-key", "--status", "--data-dir", str(relay.data_dir))
    assert done.returncode == 0, done.stderr
    return {line.split("\t")[0]: line.split("\t")[1] for line in done.stdout.splitlines()}


def test_a_whole_rotation_without_a_restart(tmp_path):
    relay = RelayProcess(tmp_path / "relay", tmp_path / "logs", args=("--workers", "2"))
    try:
        admin, bob = Member("secretariat", tmp_path / "secretariat"), Member("bob", tmp_path / "bob")
        other_admin = Member("registrar", tmp_path / "registrar")
        create_network(relay, admin, NETWORK)
        create_network(relay, other_admin, OTHER)
        bob.run("enroll", invite(admin, NETWORK, "bob"))
        approve(admin, NETWORK, bob)
        old = relay.fingerprint

        def send(subject: str) -> str:
            return bob.run("send", "--network", NETWORK, "--to", "secretariat", "--subject", subject,
                           "--body", f"{subject}: a message", "--json").json()["id"]

        before = send("before")
        admin.run("inbox")                       # delivered and acknowledged under the old key

        # The operator rotates, the relay keeps running (both workers take the new key up).
        rotated = _relay_cli("rotate-key", "--data-dir", str(relay.data_dir))
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert new != old and rotated.stdout == new + "\n"
        assert f"send this fingerprint to the administrators of {OTHER}, {NETWORK}" in rotated.stderr
        assert _status(relay) == {NETWORK: "previous", OTHER: "previous"}

        # No downtime: members keep working under the key their log names.
        waiting = send("waiting")                # accepted under the old key, collected later
        for _ in range(3):                       # several commands: both workers answer some
            assert [m["handle"] for m in bob.json("members", "--network", NETWORK)] == ["bob", "secretariat"]

        # --retire is refused while a network still names the previous key.
        refused = _relay_cli("rotate-key", "--retire", "--data-dir", str(relay.data_dir))
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines()[0] == (
            f"error: 2 network(s) still name the previous relay key {old}: {OTHER}, {NETWORK}")
        assert (relay.data_dir / PREVIOUS_KEY_FILE).exists()

        # The administrator names the new key; only the fingerprint the operator sent counts.
        assert_one_error(admin.run("network", "set-relay-key", NETWORK, old, ok=False),
                         contains="you were given")
        named = admin.run("network", "set-relay-key", NETWORK, new)
        assert named.stdout.startswith(f"{NETWORK}: relay key {new} named at log entry ")
        assert _status(relay) == {NETWORK: "newest", OTHER: "previous"}

        # bob's client follows the log by itself; mail flows under the new key.
        after = send("after")
        admin.run("inbox")
        assert bob.run("status", after, "--json").status == 0

        # The other network's administrator moves too; then the old secret is destroyed.
        other_admin.run("network", "set-relay-key", OTHER, new)
        retired = _relay_cli("rotate-key", "--retire", "--data-dir", str(relay.data_dir))
        assert retired.returncode == 0, retired.stderr
        assert retired.stdout == old + "\n"
        assert not (relay.data_dir / PREVIOUS_KEY_FILE).exists()
        assert _status(relay) == {NETWORK: "newest", OTHER: "newest"}

        # Evidence: the old key counts up to the entry that replaced it, the new key after; a
        # message accepted under one key and collected under the other verifies too.
        outputs = {}
        for name, message in (("before", before), ("waiting", waiting), ("after", after)):
            bundle = tmp_path / f"{name}.json"
            bob.run("export", message, "--out", str(bundle))
            outputs[name] = _verify(bundle)
        def signer(output: str, kind: str) -> str:
            (line,) = [l for l in output.splitlines() if l.startswith(f"ok   {kind} (secretariat)")]
            return line.split("(key ")[1].split(",")[0]
        assert signer(outputs["before"], "submission-accepted") == old
        assert signer(outputs["before"], "delivered") == old
        assert signer(outputs["waiting"], "submission-accepted") == old
        assert signer(outputs["waiting"], "delivered") == new
        assert signer(outputs["after"], "submission-accepted") == new
        assert signer(outputs["after"], "delivered") == new
    finally:
        relay.stop()


def test_a_running_relay_takes_up_a_rotation_and_a_retirement_without_a_restart(prepared):
    from relay.constants import KEY_RECHECK
    from relay.keyring import RelayKeys
    from relay.relaykey import retire, rotate

    now = [0.0]
    keys = RelayKeys(prepared, clock=lambda: now[0])
    (first,) = keys.held()
    new = rotate(prepared)
    assert [k.public for k in keys.held()] == [first.public]      # looked less than KEY_RECHECK ago
    assert [k.public for k in keys.held(now=True)] == [new.public, first.public]   # GET /v1/relay
    assert keys.for_log(first.public).public == first.public      # a network still on the old key
    assert keys.for_log(new.public).public == new.public
    retire(prepared)
    now[0] += KEY_RECHECK
    assert [k.public for k in keys.held()] == [new.public]
    # A network whose key was retired by force: the newest signs, so its admin can name it.
    assert keys.for_log(first.public).public == new.public
    assert "seed" not in repr(keys) and first.seed().hex() not in repr(keys)


# -- what a client believes of GET /v1/relay ------------------------------------------------------

@pytest.mark.parametrize("answer", [
    {"relay_keys": "AAAA"},                                    # not a list
    {"relay_keys": []},                                        # none
    {"relay_keys": ["OTHER", "NEWEST"]},                       # the newest must come first
    {"relay_keys": ["NEWEST", "OTHER", "THIRD"]},              # at most two
    {"relay_keys": ["NEWEST", "not a key"]},
])
async def test_a_client_refuses_a_key_list_of_the_wrong_shape(answer):
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from client.errors import TrustError
    from client.relay_client import RelayClient
    from keys.identity import IdentityKey

    names = {name: IdentityKey.generate().public.b64() for name in ("NEWEST", "OTHER", "THIRD")}
    keys = answer["relay_keys"]
    body = {"relay_key": names["NEWEST"], "protocol": 1,
            "relay_keys": [names.get(k, k) for k in keys] if isinstance(keys, list) else keys}

    async def relay_info(request):
        return web.json_response(body)
    app = web.Application()
    app.router.add_get("/v1/relay", relay_info)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        client = RelayClient(str(server.make_url("")), session)
        with pytest.raises(TrustError, match="presents no valid relay key"):
            await client.presented_keys()
        body["relay_keys"] = [names["NEWEST"], names["OTHER"]]
        assert await client.presented_keys() == [names["NEWEST"], names["OTHER"]]
        del body["relay_keys"]                     # a relay from before rotations: one key
        assert await client.presented_keys() == [names["NEWEST"]]
