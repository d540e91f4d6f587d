"""The one catalogue of wire errors.

Every refusal the relay sends is ``{"error": code, "message": text}`` with the
status below. Handlers raise ``RelayError(code)`` (optionally with a more
precise message); the error middleware in ``relay.app`` is the only place
that turns exceptions into responses, so nothing else writes error JSON and
no exception escapes as a 500.
"""

from __future__ import annotations

# code -> (HTTP status, default message)
CATALOGUE: dict[str, tuple[int, str]] = {
    "bad-request": (400, "the request is malformed"),
    "bad-json": (400, "the body is not valid JSON"),
    "bad-record": (400, "a signed record is malformed"),
    "bad-entry": (400, "the membership log entry was refused"),
    "bad-envelope": (400, "the envelope is malformed"),
    "wrong-relay-key": (400, "the entry names another relay key than this relay's newest"),
    "bad-range": (416, "the requested range is not satisfiable"),
    "unauthenticated": (401, "authentication required: send a valid bearer token"),
    "bad-token": (401, "the bearer token is invalid or expired: authenticate again"),
    "bad-challenge": (401, "the challenge is unknown, expired or already used"),
    "bad-signature": (401, "the signature does not verify"),
    "forbidden": (403, "you may not do this"),
    "not-a-member": (403, "you are not an active member of this network"),
    "not-an-admin": (403, "only an administrator of this network may do this"),
    "bad-creation-token": (403, "the network creation token is unknown, used or expired"),
    "not-found": (404, "no such resource"),
    "no-network": (404, "no such network on this relay"),
    "no-message": (404, "no such message, or it is no longer held"),
    "no-blob": (404, "no such blob"),
    "no-invite": (404, "no such invite, or it expired"),
    "method-not-allowed": (405, "method not allowed"),
    "request-timeout": (408, "the request body stopped arriving: send the request again"),
    "conflict": (409, "the request conflicts with what is stored"),
    "network-exists": (409, "a network with that name already exists"),
    "log-conflict": (409, "the membership log moved on: fetch it and try again"),
    "message-id-reused": (409, "a different envelope was already submitted with this message id"),
    "bad-offset": (409, "the upload offset does not match what is stored: ask with HEAD and resume"),
    "too-many-rotations": (409, "too many of your identity rotations are waiting: an administrator "
                                "must approve one, or they expire"),
    "blob-in-use": (409, "the blob is incomplete, not yours, or already attached to another message"),
    "gone": (410, "the resource has expired"),
    "too-large": (413, "the request body is too large"),
    "unsupported-media-type": (415, "send application/json"),
    "rate-limited": (429, "too many requests: slow down"),
    "too-many-sockets": (429, "you have too many push connections open: close one first"),
    "unavailable": (503, "the relay is shutting down or overloaded: retry shortly"),
}


class RelayError(Exception):
    """A refusal with a wire code from ``CATALOGUE``."""

    def __init__(self, code: str, message: str | None = None, *, headers: dict | None = None):
        if code not in CATALOGUE:
            raise ValueError(f"unknown wire error code {code!r}")
        self.code = code
        self.status, default = CATALOGUE[code]
        self.message = message or default
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}
