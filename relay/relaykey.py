"""The relay's own secrets, kept in its data folder.

* ``relay.key``: the Ed25519 seed that signs receipts and status statements.
  Each network's membership log names its public key; clients pin it.
* ``token.key``: the HMAC secret for bearer tokens (rotating it logs everyone out).

Both are created on first start with mode 0600, written to a temporary name,
fsynced and renamed, so a crash never leaves a half-written key. They are not
encrypted: the relay must start unattended, and a relay key only lets its
holder sign relay receipts, never read mail (see docs/operations.md for
rotating it).
"""

from __future__ import annotations

import os
from pathlib import Path

from keys.identity import IdentityKey

RELAY_KEY_FILE = "relay.key"
TOKEN_KEY_FILE = "token.key"


class KeyFileError(Exception):
    """a relay key file is unreadable or has the wrong size"""


def _load_or_create(path: Path, size: int) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = os.urandom(size)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return data
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{path} is not a hex key file") from None
    if len(raw) != size:
        raise KeyFileError(f"{path} must hold {size} bytes")
    return raw


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_relay_key(data_dir: Path) -> IdentityKey:
    ensure_data_dir(data_dir)
    return IdentityKey.from_seed(_load_or_create(data_dir / RELAY_KEY_FILE, 32))


def load_token_secret(data_dir: Path) -> bytes:
    ensure_data_dir(data_dir)
    return _load_or_create(data_dir / TOKEN_KEY_FILE, 32)
