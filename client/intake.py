"""What to do with an envelope the relay hands over, before and after opening it.

Three things the relay (or a lying member) can try, and the answer to each
(docs/threat-model.md):

* **a replay**: an envelope we already hold, under its own id or listed under a
  fresh mailbox id. Recognised by (network, envelope id, envelope hash): it is
  marked collected and dropped, never shown, acknowledged or run twice.
* **a collision**: another envelope under an id we already hold (a tampered copy,
  a member re-using an id). It is kept apart as a ``collision`` row and reported;
  the stored message is never replaced.
* **a transient failure** (the log is behind, an attachment cannot be fetched or
  arrives damaged, the relay's acceptance that a replaced key needs is missing):
  nothing is signed and the relay is not told "collected"; the message is retried
  with backoff (``retry`` rows) until it opens or the relay's retention ends. Only failures that retrying cannot change (a bad signature, a
  wrong recipient) are signed ``rejected``.
"""

from __future__ import annotations

from keys.constants import HOUR, MINUTE

#: reasons that a later attempt can change: never signed as a rejection
TRANSIENT_REASONS = frozenset({"log-behind", "attachment-unavailable", "acceptance-missing"})
#: the first retry waits this long; each further one twice as long, up to RETRY_MAX
RETRY_FIRST = 1 * MINUTE
RETRY_MAX = 6 * HOUR


def retry_delay(attempts: int) -> int:
    """Seconds to wait after ``attempts`` failed attempts (1, 2, ...)."""
    return min(RETRY_MAX, RETRY_FIRST * 2 ** min(max(attempts - 1, 0), 16))


def collision_id(message_id: str, digest: str) -> str:
    """Where a second envelope under a known id is kept: beside the first, never over it."""
    return f"{message_id}.{digest}"
