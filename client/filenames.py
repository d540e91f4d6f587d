"""The name an attachment gets on disk, whatever name its sender chose.

A sent name is signed, but the sender chose it and may be lying: it can hide
its real extension behind trailing dots or spaces, zero-width or direction
characters, or compatibility forms that look like other letters (a fullwidth
dot); it can be too long for the file system, or a device name on Windows.
``disk_name`` turns it into a name whose every character is what the
operating system will see, so the saved name shown to the user is the truth.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

#: one name may hold at most 255 bytes on ext4, XFS, Btrfs and APFS (UTF-8), and 255 UTF-16
#: units on NTFS, which a name of 255 UTF-8 bytes never exceeds
NAME_MAX_BYTES = 255
#: a longer suffix is not an extension worth keeping whole when a name is shortened
MAX_EXTENSION_BYTES = 32
#: what a name becomes when nothing usable is left of it
FALLBACK_NAME = "attachment"
#: removed outright: control, format (zero-width, direction marks, BOM), surrogate,
#: private-use and unassigned characters, and line or paragraph separators
_DROP = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: path separators and the characters Windows refuses in names become "_"
_FORBIDDEN = re.compile(r'[/\\:*?"<>|]')
#: device names Windows reserves in every folder, with any extension, in any case
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$)", re.IGNORECASE)


def disk_name(sent: str, limit: int = NAME_MAX_BYTES) -> str:
    """A file name for ``sent``: no folder, nothing invisible, the real extension last."""
    # NFKC: a compatibility form (fullwidth "．ｅｘｅ") becomes what it looks like.
    name = unicodedata.normalize("NFKC", sent)
    name = "".join(_keep(ch) for ch in name)
    name = _FORBIDDEN.sub("_", name)
    # Leading dots hide the file (and make "." and ".."); trailing dots and spaces
    # are dropped by Windows and hide the extension from a reader.
    name = name.strip(" ").lstrip(". ").rstrip(". ")
    if name.startswith("-"):
        name = "_" + name[1:]               # not an option to a command it is passed to
    if _RESERVED.fullmatch(name.split(".", 1)[0].rstrip(" ")):
        name = "_" + name
    return fit(name or FALLBACK_NAME, limit)


def _keep(ch: str) -> str:
    category = unicodedata.category(ch)
    if category in _DROP:
        return ""
    return " " if category == "Zs" else ch    # every kind of space is a plain space


def split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(("." + extension).encode("utf-8")) > MAX_EXTENSION_BYTES:
        return name, ""
    return stem, "." + extension


def fit(name: str, limit: int = NAME_MAX_BYTES, tail: str = "") -> str:
    """``name`` with ``tail`` before its extension, shortened to ``limit`` UTF-8 bytes."""
    stem, extension = split_extension(name)
    budget = max(limit - len((tail + extension).encode("utf-8")), 1)
    encoded = stem.encode("utf-8")
    if len(encoded) > budget:
        # Cut at a character boundary ("ignore" drops a partial multi-byte character),
        # and let no dot or space end up just before the extension.
        stem = encoded[:budget].decode("utf-8", "ignore").rstrip(". ")
    return (stem or FALLBACK_NAME[:budget]) + tail + extension


def numbered(name: str, n: int, limit: int) -> str:
    """The n-th choice for ``name`` in a folder: ``name``, then ``stem (1).ext``, ..."""
    return name if n == 0 else fit(name, limit, f" ({n})")


def name_limit(directory: Path) -> int:
    """The longest name ``directory`` takes, in bytes (never more than NAME_MAX_BYTES)."""
    try:
        found = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):     # no pathconf on Windows
        return NAME_MAX_BYTES
    return min(found, NAME_MAX_BYTES) if found and found > 0 else NAME_MAX_BYTES
