"""The base of every storage refusal (relay/db.py re-exports it; relay/integrity.py needs it
without importing the database module)."""

from __future__ import annotations


class StoreError(Exception):
    """the relay's storage refused the operation"""

    #: wire error code the relay answers with (see relay/errors.py)
    code = "conflict"

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class Unavailable(StoreError):
    """the database is closed or could not commit: retry shortly"""

    code = "unavailable"
