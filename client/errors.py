"""Every error the client reports to its user.

The message (or the class docstring) is the ``error: ...`` line the CLI
prints; ``hint`` is an optional second line saying what to do. Lowercase, no
final period, no key material, no plaintext.
"""

from __future__ import annotations


class ClientError(Exception):
    """the operation failed"""

    exit_code = 1

    def __init__(self, message: str | None = None, *, hint: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(ClientError):
    """the command was used wrongly"""
    exit_code = 2


class WrongPassphrase(ClientError):
    """wrong passphrase: the keystore could not be unlocked"""


class WeakPassphrase(UsageError):
    """the passphrase is too short"""

    def __init__(self, *, minimum: int):
        super().__init__(f"use a passphrase of at least {minimum} characters",
                         hint="it seals your private keys: a short one is guessed quickly")
        self.minimum = minimum


class NoIdentity(ClientError):
    """no identity here yet: run 'comity network create' or 'comity enroll' first"""


class UnknownNetwork(ClientError):
    """unknown network"""


class RelayUnreachable(ClientError):
    """the relay is unreachable"""


class RelayRefused(ClientError):
    """the relay refused the request"""

    def __init__(self, message: str, *, code: str = "", status: int = 0, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code, self.status = code, status


class RelayMismatch(ClientError):
    """the relay is not the one pinned for this network"""


class TrustError(ClientError):
    """the relay served data that does not verify"""


class NotAMember(ClientError):
    """you are not an active member of this network"""


class NotFound(ClientError):
    """not found"""


class NothingWaiting(ClientError):
    """nothing is waiting for approval"""


class FingerprintMismatch(ClientError):
    """the fingerprint given is not the one waiting: nothing was signed"""
