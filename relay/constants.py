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

#: seconds SIGTERM waits for in-flight requests before closing
SHUTDOWN_GRACE = 10 * SECOND
#: then seconds push WebSockets and overdue requests get before they are cancelled
CLOSE_GRACE = 1 * SECOND

#: how often a relay process looks at its key files for a rotation at most (two stat calls);
#: GET /v1/relay looks every time, so a client never hears of a key the relay does not use yet
KEY_RECHECK = 0.5
