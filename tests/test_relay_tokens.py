"""Bearer tokens (relay.auth.Authenticator) without the HTTP layer: the verified-token cache."""

from __future__ import annotations

import os

import pytest

from relay.auth import MAX_CACHED_TOKENS, Authenticator
from relay.errors import RelayError


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


def test_a_cached_token_still_expires():
    clock = Clock()
    auth = Authenticator(os.urandom(32), clock=clock)
    token, expires = auth.issue_token("refco", "ana", b"\x01" * 20)
    assert auth.check_token(token).handle == "ana"
    assert auth.check_token(token).handle == "ana"          # second time from the cache
    clock.now = expires + 1
    with pytest.raises(RelayError) as caught:
        auth.check_token(token)
    assert caught.value.code == "bad-token"


def test_a_forged_token_is_never_cached():
    auth = Authenticator(os.urandom(32), clock=Clock())
    token, _ = auth.issue_token("refco", "ana", b"\x01" * 20)
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for _ in range(2):
        with pytest.raises(RelayError):
            auth.check_token(forged)
    other = Authenticator(os.urandom(32), clock=Clock())
    with pytest.raises(RelayError):
        other.check_token(token)                             # another relay's secret


def test_the_cache_is_bounded():
    auth = Authenticator(os.urandom(32), clock=Clock())
    for i in range(MAX_CACHED_TOKENS + 5):
        auth.check_token(auth.issue_token("refco", f"member-{i}", b"\x01" * 20)[0])
    assert len(auth._verified) <= MAX_CACHED_TOKENS


# -- comity-relay token refuses a folder that holds no relay (issue 10, item 7) ---------------

def _run_relay_cli(*args: str, cwd=None):
    """``comity-relay ARGS`` in this process, with no COMITY_RELAY_* setting from outside."""
    from click.testing import CliRunner

    from relay.cli import main
    env = {name: None for name in os.environ if name.startswith("COMITY_RELAY_")}
    # click 8.1 mixes stderr into stdout unless told not to; 8.2 dropped the argument
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, list(args), env=env, catch_exceptions=False)


def _tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("layout", ["missing", "empty", "unrelated"])
def test_token_refuses_a_folder_with_no_relay_and_creates_nothing(tmp_path, layout):
    folder = tmp_path / "data"
    if layout != "missing":
        folder.mkdir()
    if layout == "unrelated":
        (folder / "notes.txt").write_text("not a relay\n")
        (folder / "relay.db").mkdir()            # a folder of that name is no database either
    before = _tree(tmp_path)
    result = _run_relay_cli("token", "--network", "refco", "--data-dir", str(folder))
    assert result.exit_code == 1
    assert result.stdout == ""                   # no token a relay would not honour
    assert result.stderr.splitlines() == [
        f"error: {folder} holds no comity relay (no relay.key / relay.db)",
        f"hint: start the relay once with 'comity-relay serve --data-dir {folder}', "
        "or check --data-dir / COMITY_RELAY_DATA_DIR"]
    assert _tree(tmp_path) == before


def test_token_without_data_dir_refuses_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run_relay_cli("token", "--network", "refco")
    assert result.exit_code == 1
    assert "./comity-data holds no comity relay" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_prepares_a_folder_that_token_then_accepts(tmp_path):
    folder = tmp_path / "data"
    first = _run_relay_cli("init", "--data-dir", str(folder))
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("relay fingerprint ")
    assert (folder / "relay.key").stat().st_mode & 0o777 == 0o600
    again = _run_relay_cli("init", "--data-dir", str(folder))
    assert again.stdout == first.stdout          # the same key: init never replaces one
    minted = _run_relay_cli("token", "--network", "refco", "--data-dir", str(folder))
    assert minted.exit_code == 0, minted.stderr
    assert len(minted.stdout.split()) == 1


def test_version_is_the_package_version():
    from importlib.metadata import version
    result = _run_relay_cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"comity-relay {version('comity')}\n"
