"""``comity`` command line (lands with issue #4)."""

from __future__ import annotations

import sys


def main() -> None:
    print("error: comity is not yet implemented (see issue #4)", file=sys.stderr)
    sys.exit(1)
