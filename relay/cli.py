"""``comity-relay`` command line (the server lands with issue #3)."""

from __future__ import annotations

import sys


def main() -> None:
    print("error: comity-relay is not yet implemented (see issue #3)", file=sys.stderr)
    sys.exit(1)
