"""Where the client keeps its state: ``COMITY_HOME``.

Default: the platform's user data folder (``$XDG_DATA_HOME/comity`` or
``~/.local/share/comity`` on Linux and BSD, ``~/Library/Application
Support/comity`` on macOS, ``%APPDATA%\\comity`` on Windows). The folder is
created with mode 0700; every file in it with 0600.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_HOME = "COMITY_HOME"
ENV_PASSPHRASE = "COMITY_PASSPHRASE"
#: O_NOFOLLOW where the platform has it (POSIX)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def default_home() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "comity"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "comity"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "comity"


def resolve_home(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_HOME)
    return Path(env) if env else default_home()


def ensure_home(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask and ignored for an existing folder.
    os.chmod(path, 0o700)
    return path


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parent, each new folder 0700 whatever the umask."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue                    # made meanwhile by someone else: not ours to change
        os.chmod(folder, 0o700)         # mkdir's mode is filtered by the umask


def open_private(path: Path, flags: int) -> int:
    """Open ``path`` for writing as a file only its owner can read, never through a symlink."""
    fd = os.open(path, flags | os.O_WRONLY | os.O_CREAT | NOFOLLOW, 0o600)
    try:
        if hasattr(os, "fchmod"):       # POSIX
            os.fchmod(fd, 0o600)        # whatever the umask, and an older file made 0644 too
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable only by its owner, atomically (temp name, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
