"""
The C{Content-Range} request header of docs/protocol.md section 3.

Two forms are accepted, and nothing else:
  - C{bytes S-E/T} or C{bytes S-E/*}: an append of bytes S to E inclusive,
    of a file whose total is T (or not yet known);
  - C{bytes */T} or C{bytes */*}: an offset query.

The parser is strict: a full match, exactly one space after the unit, plain
ASCII digits (at most 19, and below 2**63), no surrounding whitespace (the
HTTP layer already strips it). The unit is matched case-insensitively, as RFC
9110 section 14.1 says range units are. It does not use
L{twisted.web.http.parseContentRange}, which accepts C{bytes 5-3/10} and
C{bytes 0-99/10} (the tests use it as an oracle where both agree).
"""

from __future__ import annotations

import re

import attrs

from uploadsvc.errors import BadRequest

# 2**63 - 1 fits in a signed 64-bit off_t, which is what the OS will take.
MAX_VALUE = 2**63 - 1

_NUMBER = rb"([0-9]{1,19})"
_RANGE = re.compile(
    rb"(?i:bytes) " + _NUMBER + rb"-" + _NUMBER + rb"/(\*|[0-9]{1,19})"
)
_QUERY = re.compile(rb"(?i:bytes) \*/(\*|[0-9]{1,19})")


def _badRange(reason: str) -> BadRequest:
    return BadRequest("bad-range", reason)


def _number(digits: bytes) -> int:
    """
    Convert checked ASCII digits, refusing values beyond L{MAX_VALUE}.
    """
    value = int(digits)
    if value > MAX_VALUE:
        raise _badRange("Content-Range value too large")
    return value


def _total(digits: bytes) -> int | None:
    return None if digits == b"*" else _number(digits)


def _formatTotal(total: int | None) -> bytes:
    return b"*" if total is None else b"%d" % (total,)


@attrs.frozen
class ContentRange:
    """
    C{Content-Range: bytes first-last/total}: the request body holds bytes
    C{first} to C{last} inclusive.

    @ivar total: the size of the whole file, or L{None} for C{*}.
    """

    first: int
    last: int
    total: int | None

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= MAX_VALUE:
            raise ValueError(f"bad range {self.first}-{self.last}")
        if self.total is not None and not self.last < self.total <= MAX_VALUE:
            raise ValueError(f"range end {self.last} not below total {self.total}")

    @property
    def length(self) -> int:
        """
        The number of bytes the range covers.
        """
        return self.last - self.first + 1

    def toHeader(self) -> bytes:
        """
        Format this range as a C{Content-Range} header value.
        """
        return b"bytes %d-%d/%s" % (self.first, self.last, _formatTotal(self.total))


@attrs.frozen
class RangeQuery:
    """
    C{Content-Range: bytes */total}: an offset query with an empty body.

    @ivar total: the total the client states, or L{None} for C{*}.
    """

    total: int | None

    def __attrs_post_init__(self) -> None:
        if self.total is not None and not 0 <= self.total <= MAX_VALUE:
            raise ValueError(f"bad total {self.total}")

    def toHeader(self) -> bytes:
        """
        Format this query as a C{Content-Range} header value.
        """
        return b"bytes */" + _formatTotal(self.total)


def parseContentRange(value: bytes) -> ContentRange | RangeQuery:
    """
    Parse a C{Content-Range} request header value.

    @raise BadRequest: C{bad-range} when it is malformed, when C{E < S}, or
        when the total is known and C{E >= T}.
    """
    match = _RANGE.fullmatch(value)
    if match is not None:
        first = _number(match.group(1))
        last = _number(match.group(2))
        total = _total(match.group(3))
        if last < first:
            raise _badRange("Content-Range end is before its start")
        if total is not None and last >= total:
            raise _badRange("Content-Range end is not below the total length")
        return ContentRange(first, last, total)
    match = _QUERY.fullmatch(value)
    if match is not None:
        return RangeQuery(_total(match.group(1)))
    raise _badRange("malformed Content-Range (want bytes S-E/T or bytes */T)")


def checkRangeLength(rng: ContentRange, contentLength: int | None) -> None:
    """
    Check that a request's C{Content-Length}, when it has one, is the length
    of its range.

    @param contentLength: L{None} for a chunked body.

    @raise BadRequest: C{range-length-mismatch} when they differ.
    """
    if contentLength is not None and contentLength != rng.length:
        raise BadRequest(
            "range-length-mismatch",
            f"Content-Length {contentLength} differs from the range's "
            f"length {rng.length}",
        )
