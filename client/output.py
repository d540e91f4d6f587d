"""What the CLI prints. Data goes to stdout; messages for humans, progress and
errors go to stderr. Output rules (like age's): lowercase, no final period,
``error: ...`` then optionally ``hint: ...``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from typing import Any, Callable

import click

#: shown as an escape (\x1b, \u202e), never passed to the terminal: control characters (a
#: terminal obeys them), format characters (direction overrides and isolates, zero-width
#: characters: they hide or reorder text), line and paragraph separators, surrogates
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: only characters outside printable ASCII need a closer look (fast for ordinary text)
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")


def escape(text: str, *, keep: str = "\n\t", also: str = "") -> str:
    """``text`` with every character that could hide, reorder or rewrite what is shown
    escaped, except those in ``keep``; the characters in ``also`` are escaped too."""
    def replace(found: re.Match) -> str:
        ch = found.group()
        if ch in keep or (ch not in also and unicodedata.category(ch) not in _ESCAPED_CATEGORIES):
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return _NOT_PLAIN.sub(replace, text)


def clean(text: Any) -> str:
    return escape(str(text))


def display(text: Any, *, also: str = "") -> str:
    """Text another member wrote, as one line: NFC-normalised, nothing hidden."""
    return escape(unicodedata.normalize("NFC", str(text)), keep="", also=also)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True))


def out(text: str = "") -> None:
    click.echo(clean(text))


def say(text: str) -> None:
    """A line for the human at the terminal (stderr)."""
    click.echo(clean(text), err=True)


def error(message: str, hint: str | None = None) -> None:
    click.echo(f"error: {clean(message)}", err=True)
    if hint:
        click.echo(f"hint: {clean(hint)}", err=True)


def warning(message: str) -> None:
    click.echo(f"warning: {clean(message)}", err=True)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    if not rows:
        return
    widths = {key: max(len(title), *(len(clean(r.get(key, ""))) for r in rows)) for key, title in columns}
    out("  ".join(title.upper().ljust(widths[key]) for key, title in columns).rstrip())
    for row in rows:
        out("  ".join(clean(row.get(key, "")).ljust(widths[key]) for key, _ in columns).rstrip())


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Progress:
    """A one-line progress bar on stderr, only when both stdout and stderr are terminals."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty() and sys.stdout.isatty()

    def bar(self, label: str, total: int) -> Callable[[int], None]:
        if not self.enabled or total <= 0:
            return lambda n: None
        state = {"done": 0, "shown": 0.0, "start": time.monotonic()}

        def advance(n: int) -> None:
            state["done"] = min(total, state["done"] + n)
            now = time.monotonic()
            if now - state["shown"] < 0.1 and state["done"] < total:
                return
            state["shown"] = now
            fraction = state["done"] / total
            filled = int(fraction * 30)
            rate = state["done"] / max(now - state["start"], 1e-6)
            line = (f"\r{clean(label)[:30]:<30} [{'#' * filled}{'.' * (30 - filled)}] "
                    f"{fraction * 100:5.1f}% {human_size(state['done'])}/{human_size(total)} "
                    f"{human_size(int(rate))}/s")
            sys.stderr.write(line)
            if state["done"] >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        return advance
