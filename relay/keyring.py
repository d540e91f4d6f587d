"""The relay keys a running relay holds, and which one each network gets.

``comity-relay rotate-key`` and ``--retire`` change the key files while the relay
runs (relay/relaykey.py). Each process (every worker too) notices by the files'
identity (inode, size, change time) and reloads, so all of them hold the same keys
without a restart or a signal.

Which key signs for a network: the one its membership log names at its head, as long
as the relay holds it; otherwise (a network whose key was retired by force) the
newest, as a relay whose key was replaced by hand would, so an administrator can
still log in and name it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from keys.identity import IdentityKey, IdentityPublicKey, format_fingerprint

from .constants import KEY_RECHECK
from .relaykey import PREVIOUS_KEY_FILE, RELAY_KEY_FILE, KeyFileError, load_relay_keys

log = logging.getLogger("comity.relay")


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_ctime_ns)


class RelayKeys:
    def __init__(self, data_dir: Path, *, clock=time.monotonic):
        self._dir = data_dir
        self._clock = clock
        self._stamp = self._stamps()
        self._keys = load_relay_keys(data_dir)
        self._checked = clock()

    @classmethod
    def of(cls, *keys: IdentityKey) -> "RelayKeys":
        """Exactly ``keys`` (newest first), never read from files: for tests."""
        held = cls.__new__(cls)
        held._dir, held._keys, held._clock = None, list(keys), time.monotonic
        return held

    def __repr__(self) -> str:
        return f"RelayKeys({self._keys!r})"       # IdentityKey's repr shows fingerprints only

    def _stamps(self) -> tuple:
        return (_stamp(self._dir / RELAY_KEY_FILE), _stamp(self._dir / PREVIOUS_KEY_FILE))

    def refresh(self, *, now: bool = False) -> None:
        """Reload if the key files changed (looked at every KEY_RECHECK, or ``now``)."""
        if self._dir is None or (not now and self._clock() - self._checked < KEY_RECHECK):
            return
        self._checked = self._clock()
        stamp = self._stamps()
        if stamp == self._stamp:
            return
        try:
            keys = load_relay_keys(self._dir)
        except (KeyFileError, OSError) as exc:
            # Files are replaced by rename, so this is a damaged folder: keep what we hold.
            log.warning("cannot reload the relay keys: %s", type(exc).__name__)
            return
        self._stamp, self._keys = stamp, keys
        log.info("relay keys reloaded: %s",
                 ", ".join(format_fingerprint(k.public.fingerprint()) for k in keys))

    def held(self, *, now: bool = False) -> list[IdentityKey]:
        """Every key held, newest first."""
        self.refresh(now=now)
        return list(self._keys)

    @property
    def newest(self) -> IdentityKey:
        """The key new networks name, and the one ``set-relay-key`` may name."""
        return self.held()[0]

    def find(self, public: IdentityPublicKey) -> IdentityKey | None:
        return next((k for k in self.held() if k.public == public), None)

    def for_log(self, named: IdentityPublicKey) -> IdentityKey:
        """The key that signs for a network whose log names ``named``."""
        return self.find(named) or self.newest
