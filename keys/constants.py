"""Named limits and durations of the trust core, in one place."""

SECOND = 1
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

#: format version carried by envelopes, invites and streams
PROTOCOL_VERSION = 1

# Handles: lowercase letters, digits, "-" and "."; 3-64 characters.
HANDLE_MIN = 3
HANDLE_MAX = 64
HANDLE_PATTERN = r"[a-z0-9][a-z0-9.-]{1,62}[a-z0-9]"  # use with re.fullmatch

#: network names follow the handle rules
NETWORK_NAME_PATTERN = HANDLE_PATTERN

ROLES = ("admin", "member")

MAX_DISPLAY_NAME = 200
MAX_ORGANISATION = 200
COUNTRY_PATTERN = r"[A-Z]{2}"  # use with re.fullmatch

# Default network policy (the genesis entry may set others within the bounds).
DEFAULT_RETENTION = 30 * DAY
DEFAULT_KEY_MAX_AGE = 90 * DAY
DEFAULT_KEY_GRACE = 30 * DAY
DEFAULT_MAX_RECIPIENTS = 500
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ATTACHMENT_BYTES = 64 * 1024**3
DEFAULT_MAX_ATTACHMENTS = 100

# Freshness of what a relay says about the log (docs/protocol.md §4 "Signed log head", §5.7).
#: a client refuses a signed log head older than this by its own clock (plus CLOCK_SKEW)
HEAD_MAX_AGE = 5 * MINUTE
#: how far the clocks of two honest parties (the relay, members) may differ
CLOCK_SKEW = 5 * MINUTE
#: how long after a key rotation (or removal) an honest sender may still seal to the old roster:
#: its head may be HEAD_MAX_AGE old, and its clock and the relay's may each be CLOCK_SKEW off
ROTATION_WINDOW = HEAD_MAX_AGE + 2 * CLOCK_SKEW

#: hard ceilings no policy may exceed
MAX_RECIPIENTS = 500
MAX_ATTACHMENTS = 1000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Message header and attachment manifest limits: generous for real use, small
# enough that a terminal line or a file name stays sane.
MAX_SUBJECT = 300
MAX_REFERENCE = 200
MAX_LEGAL_BASIS = 1000
MAX_HANDLING = 200
#: BCP 47 asks implementations to accept tags of at least 35 characters
MAX_LANGUAGE = 35
#: most file systems cap a file name at 255
MAX_ATTACHMENT_NAME = 255
MAX_MEDIA_TYPE = 255
MAX_BLOB_ID = 128
