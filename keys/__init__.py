"""comity's trust core: identities, encryption keys, the membership log,
envelopes, attachment streams, receipts and invites.

Pure code: no network, no disk, no clock (callers pass times in). Both the
relay and the client import it; it imports neither. Import the concept you
need from its module (``from keys.log import LogVerifier``); this package
re-exports only the error hierarchy.
"""

from .errors import (DecryptionError, EncodingError, EnvelopeError, ForkError, InviteError,
                     KeyFormatError, KeysError, LogError, ReceiptError, SignatureError,
                     StreamError)

__all__ = [
    "DecryptionError", "EncodingError", "EnvelopeError", "ForkError", "InviteError",
    "KeyFormatError", "KeysError", "LogError", "ReceiptError", "SignatureError", "StreamError",
]
