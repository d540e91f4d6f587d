"""Canonical JSON, base64url and domain-separated signing input.

Every signed or hashed record in comity is serialised the same way, so that a
signature made by one implementation verifies in another:

* objects with keys sorted by Unicode code point, no duplicate keys;
* compact separators (``,`` and ``:``), no insignificant white space;
* UTF-8, non-ASCII characters written as themselves (no ``\\u`` escapes
  except the ones JSON requires for control characters, ``"`` and ``\\``);
* integers only, within +/- (2**53 - 1) so JavaScript and Go read them exactly;
  no floats, NaN or infinities;
* bytes travel as base64url without padding (RFC 4648 section 5).

Signing input is ``b"comity/v1/" + purpose + b"\\x00" + canonical(record)``:
the purpose names what the signature is for, so a signature on one kind of
record can never be replayed as another (domain separation).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .errors import EncodingError

#: largest integer every mainstream JSON reader represents exactly (IEEE double)
MAX_SAFE_INTEGER = 2**53 - 1

#: version prefix of every domain-separation label; bump when a format changes
DOMAIN_PREFIX = b"comity/v1/"

_PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def _check(value: Any, depth: int = 0) -> None:
    # Depth cap stops a hostile record from exhausting the stack.
    if depth > 32:
        raise EncodingError("record is nested too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise EncodingError("integer out of the interoperable range (+/- 2**53-1)")
        return
    if isinstance(value, float):
        raise EncodingError("floating-point numbers are not allowed in comity records")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodingError("string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError("object keys must be strings")
            _check(key, depth + 1)
            _check(item, depth + 1)
        return
    raise EncodingError(f"values of type {type(value).__name__} cannot be encoded")


def canonical(value: Any, *, checked: bool = False) -> bytes:
    """Serialise ``value`` to canonical comity JSON bytes.

    ``checked=True`` skips the value check for data that ``parse`` returned
    (it ran the same check): the relay's hot path encodes what it just parsed.
    """
    if not checked:
        _check(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise EncodingError(f"duplicate key {key!r} in object")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise EncodingError("floating-point numbers are not allowed in comity records")


def _no_constant(text: str) -> Any:
    raise EncodingError(f"{text} is not allowed in comity records")


def parse(data: bytes | str) -> Any:
    """Parse JSON, refusing duplicate keys, floats, NaN and invalid UTF-8.

    The input need not be canonical (white space is tolerated); signatures are
    always checked over ``canonical(parse(data))``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise EncodingError("record is not valid UTF-8") from None
    try:
        value = json.loads(
            data,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except EncodingError:
        raise
    except (ValueError, RecursionError) as exc:
        raise EncodingError(f"record is not valid JSON: {_short(exc)}") from None
    _check(value)
    return value


def _short(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0][:120]


def b64e(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str, *, length: int | None = None, what: str = "value") -> bytes:
    """Decode strict base64url without padding; optionally require a length.

    Refuses padding, the standard alphabet, white space and non-canonical
    trailing bits, so every byte string has exactly one accepted encoding.
    """
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise EncodingError(f"{what} is not valid base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EncodingError(f"{what} is not valid base64url") from None
    if b64e(data) != text:
        raise EncodingError(f"{what} is not valid base64url (non-canonical encoding)")
    if length is not None and len(data) != length:
        raise EncodingError(f"{what} must be {length} bytes, not {len(data)}")
    return data


def signing_input(purpose: str, record: Any) -> bytes:
    """The exact bytes an Ed25519 signature covers for ``record`` under ``purpose``."""
    if not _PURPOSE_RE.fullmatch(purpose):
        raise EncodingError(f"invalid signature purpose {purpose!r}")
    return DOMAIN_PREFIX + purpose.encode("ascii") + b"\x00" + canonical(record)


def domain_label(purpose: str) -> bytes:
    """``comity/v1/<purpose>`` as bytes, for KDF labels and HPKE info strings."""
    if not _PURPOSE_RE.fullmatch(purpose):
        raise EncodingError(f"invalid label {purpose!r}")
    return DOMAIN_PREFIX + purpose.encode("ascii")


def require_fields(record: Any, required: set[str], optional: set[str] = frozenset(), *,
                   what: str, error: type[Exception] = EncodingError) -> dict:
    """Check ``record`` is an object with exactly the allowed fields.

    Unknown fields in signed records are refused: a field a verifier does not
    understand is a field whose meaning it cannot vouch for.
    """
    if not isinstance(record, dict):
        raise error(f"{what} must be a JSON object")
    missing = required - record.keys()
    if missing:
        raise error(f"{what} lacks field(s): {', '.join(sorted(missing))}")
    unknown = record.keys() - required - optional
    if unknown:
        raise error(f"{what} has unknown field(s): {', '.join(sorted(unknown))}")
    return record
