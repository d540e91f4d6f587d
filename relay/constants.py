"""Named limits and durations of the relay, in one place."""

from keys.constants import DAY, HOUR, MINUTE, SECOND

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_DATA_DIR = "./comity-data"

#: largest JSON request body (an envelope with 500 wrapped keys is about 1.2 MiB)
MAX_JSON_BODY = 8 * 1024 * 1024
#: largest single blob upload piece; clients send 4 MiB pieces
MAX_BLOB_PIECE = 16 * 1024 * 1024
#: a blob is uploaded in at most this many pieces (stops 1-byte-piece abuse)
MAX_BLOB_PIECES = 100_000
MAX_LOG_PAGE = 500
MAX_MAILBOX_PAGE = 500

CREATION_TOKEN_TTL = 24 * HOUR
#: how long a challenge may be answered; a used one is remembered that long (relay/auth.py)
CHALLENGE_TTL = 2 * MINUTE
TOKEN_TTL = 15 * MINUTE
INVITE_TTL = 14 * DAY
ORPHAN_BLOB_TTL = 1 * DAY
#: identity rotations one member may have waiting at once: a retry or two, and room for a
#: competing request to show up as a conflict; when full the next one is refused, never swapped in
MAX_PENDING_ROTATIONS_PER_MEMBER = 4
#: a rotation nobody approved within this long is dropped; the member signs again
PENDING_ROTATION_TTL = 7 * DAY
#: how often the relay sweeps expired envelopes, invites, rotations and orphan blobs
SWEEP_INTERVAL = 60 * SECOND

#: per-member request budget: RATE_BURST requests, refilled at RATE_PER_SECOND
RATE_PER_SECOND = 200
RATE_BURST = 400
#: per client address: unauthenticated requests that write (network creation, enrollments)
#: and failed token requests; challenges and valid signatures spend none (relay/auth.py)
ANON_RATE_PER_SECOND = 20
ANON_RATE_BURST = 60

#: Retry-After of a 503: the database is damaged (an operator must act), the disk is full,
#: or any other 503 without its own (a restart, an overload)
RETRY_DAMAGED = 5 * MINUTE
RETRY_DISK_FULL = 1 * MINUTE
RETRY_UNAVAILABLE = 5 * SECOND
#: a full disk is logged at most once per this long (relay/integrity.py)
DISK_FULL_LOG_INTERVAL = 1 * MINUTE
#: /healthz says disk-full for at least this long after a write failed for lack of space...
DISK_FULL_HOLD = 10 * SECOND
#: ...and until the file system has this much free again: a few of the largest upload pieces
DISK_FREE_TO_CLEAR = 4 * MAX_BLOB_PIECE

#: seconds SIGTERM waits for in-flight requests before closing
SHUTDOWN_GRACE = 10 * SECOND
#: then seconds push WebSockets and overdue requests get before they are cancelled
CLOSE_GRACE = 1 * SECOND

#: seconds a kept-alive connection may wait for its next request (aiohttp's default is an hour)
KEEPALIVE_TIMEOUT = 30 * SECOND
#: seconds a connection has to deliver a request's complete headers: one round trip normally
HEADER_TIMEOUT = 10 * SECOND
#: seconds a request body may go without a byte arriving: longer than TCP's retransmission
#: back-off on a bad mobile link, short enough that a stalled upload frees its lock soon
BODY_TIMEOUT = 30 * SECOND
#: file handles kept out of the connection cap: database, journal, log, sockets, pipes
CONNECTION_RESERVE = 64
#: share of the remaining handles for connections; the rest is for the blob file an upload or
#: download holds beside its connection
CONNECTION_SHARE = 0.75
#: the derived cap never goes below or above these, whatever ``ulimit -n`` says
MIN_CONNECTIONS = 16
MAX_DERIVED_CONNECTIONS = 100_000
#: a flood of refusals or accept errors is logged at most once per this many seconds
LOG_EVERY = 10 * SECOND
#: push WebSockets one member may hold at once, per relay process: a few devices and
#: reconnects overlapping, not thousands
MAX_PUSH_SOCKETS_PER_MEMBER = 32
#: how often a relay process looks at its key files for a rotation at most (two stat calls);
#: GET /v1/relay looks every time, so a client never hears of a key the relay does not use yet
KEY_RECHECK = 0.5
