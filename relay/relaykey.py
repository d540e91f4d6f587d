"""The relay's own secrets, kept in its data folder.

* ``relay.key``: the Ed25519 seed that signs receipts and status statements.
  Each network's membership log names its public key; clients pin it.
* ``relay.key.previous``: the key ``relay.key`` held before ``comity-relay
  rotate-key``, kept until ``rotate-key --retire`` destroys it, so networks whose
  log still names it keep working until their administrators name the new one.
* ``token.key``: the HMAC secret for bearer tokens (rotating it logs everyone out).

Keys are created with mode 0600, written to a temporary name, fsynced and
renamed, so a crash never leaves a half-written key. They are not encrypted:
the relay must start unattended, and a relay key only lets its holder sign
relay receipts, never read mail (docs/operations.md, "Rotating the relay key").

Rotation keeps one invariant through any crash: ``relay.key`` always holds a
whole key, and ``relay.key.previous``, if present, holds a whole key (perhaps the
same one, as a hard link, if the rotation stopped half-way: harmless, the relay
then holds one key and ``rotate-key`` simply goes on).
"""

from __future__ import annotations

import os
from pathlib import Path

from keys.identity import IdentityKey

RELAY_KEY_FILE = "relay.key"
PREVIOUS_KEY_FILE = "relay.key.previous"
#: a previous key being destroyed; never loaded, finished by the next ``--retire``
RETIRING_KEY_FILE = "relay.key.retiring"
TOKEN_KEY_FILE = "token.key"
DATABASE_FILE = "relay.db"
#: bytes in a relay key seed and a token secret
KEY_SIZE = 32


class KeyFileError(Exception):
    """a relay key file is unreadable or has the wrong size"""


class RotationRefused(Exception):
    """a key rotation step that must not happen now; the message says why"""


def holds_relay(data_dir: Path) -> bool:
    """Whether ``data_dir`` is a relay's data folder (serve or init ran there)."""
    return (data_dir / RELAY_KEY_FILE).is_file() and (data_dir / DATABASE_FILE).is_file()


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_key_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (hex) atomically: temporary name, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_key_file(path: Path, size: int) -> bytes:
    data = path.read_bytes()
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{path} is not a hex key file") from None
    if len(raw) != size:
        raise KeyFileError(f"{path} must hold {size} bytes")
    return raw


def _load_or_create(path: Path, size: int) -> bytes:
    try:
        return _read_key_file(path, size)
    except FileNotFoundError:
        data = os.urandom(size)
        _write_key_file(path, data)
        return data


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_relay_key(data_dir: Path) -> IdentityKey:
    """The newest relay key, created on first start."""
    ensure_data_dir(data_dir)
    return IdentityKey.from_seed(_load_or_create(data_dir / RELAY_KEY_FILE, KEY_SIZE))


def load_relay_keys(data_dir: Path) -> list[IdentityKey]:
    """Every relay key held, newest first (creates nothing: the relay made them at start)."""
    keys = [IdentityKey.from_seed(_read_key_file(data_dir / RELAY_KEY_FILE, KEY_SIZE))]
    try:
        previous = IdentityKey.from_seed(_read_key_file(data_dir / PREVIOUS_KEY_FILE, KEY_SIZE))
    except FileNotFoundError:
        return keys
    if previous.public != keys[0].public:          # equal: a rotation stopped half-way
        keys.append(previous)
    return keys


def load_token_secret(data_dir: Path) -> bytes:
    ensure_data_dir(data_dir)
    return _load_or_create(data_dir / TOKEN_KEY_FILE, KEY_SIZE)


def rotate(data_dir: Path) -> IdentityKey:
    """Make a new newest key; the current one becomes ``relay.key.previous``.

    One rotation at a time: refused while a previous key is still held, so the relay
    never holds more than two keys and ``--retire`` always knows which one to destroy.
    """
    current = data_dir / RELAY_KEY_FILE
    previous = data_dir / PREVIOUS_KEY_FILE
    if len(load_relay_keys(data_dir)) > 1:
        raise RotationRefused("the relay still holds the key before the last rotation")
    previous.unlink(missing_ok=True)       # a link to relay.key left by a rotation cut short
    # A hard link, not a copy: at every instant both names hold a whole key.
    os.link(current, previous)
    _fsync_dir(data_dir)
    new = os.urandom(KEY_SIZE)
    _write_key_file(current, new)
    return IdentityKey.from_seed(new)


def retire(data_dir: Path) -> bool:
    """Destroy ``relay.key.previous`` (overwrite, fsync, unlink); False if there was none.

    The overwrite is best effort: a journaling or copy-on-write file system, or an SSD,
    may keep the old blocks. It still keeps the secret out of every later file-level copy.
    """
    previous = data_dir / PREVIOUS_KEY_FILE
    retiring = data_dir / RETIRING_KEY_FILE
    found = previous.exists()
    if found:
        os.replace(previous, retiring)     # from here on no relay loads it
        _fsync_dir(data_dir)
    if not retiring.exists():
        return found
    if os.path.samefile(retiring, data_dir / RELAY_KEY_FILE):
        retiring.unlink()                  # the link of a rotation cut short: relay.key itself
    else:
        size = retiring.stat().st_size
        fd = os.open(retiring, os.O_WRONLY)
        try:
            os.write(fd, os.urandom(size))
            os.fsync(fd)
        finally:
            os.close(fd)
        retiring.unlink()
    _fsync_dir(data_dir)
    return True
