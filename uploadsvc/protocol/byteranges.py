"""
Serving a complete file: the C{Range} header and the conditional headers
(RFC 9110 sections 13 and 14) as pure decisions.

L{parseRange} reads a C{Range} header against a file's size; L{decide}
combines it with C{If-Match}, C{If-Unmodified-Since}, C{If-None-Match},
C{If-Modified-Since} and C{If-Range}, in RFC 9110 section 13.2.2's order, into
what to answer: 200 (the whole file), 206 (one range), 304, 412 or 416. Choices
of our own, all allowed by RFC 9110:

  - a C{Range} that is malformed, names another unit, or asks for more than
    one range is ignored: the whole file is served with 200 (no
    multipart/byteranges);
  - a range of a file of size 0 is ignored too (no C{Content-Range} can
    describe an empty part);
  - only C{GET} honours C{Range}; C{HEAD} answers as C{GET} without one;
  - a date that cannot be parsed is ignored, as if its header were absent;
  - an C{If-Range} date keeps the range only when the file's Last-Modified
    is at least a second before the answer's time (RFC 9110 sections 8.8.2.2
    and 13.1.5): a file replaced within the second of a date the client
    holds could carry the same date, and a range of it would splice two
    versions. An C{If-Range} entity tag (strong) needs no such wait.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import attrs

#: Digits accepted in a range position: more is no file on any disk.
MAX_DIGITS = 19

_SPEC = re.compile(rb"([0-9]{1,%d})-([0-9]{1,%d})?|-([0-9]{1,%d})" % ((MAX_DIGITS,) * 3))
_ETAG = re.compile(rb'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*')


@attrs.frozen
class Span:
    """
    One satisfiable byte range: C{length} bytes from C{start}.
    """

    start: int
    length: int

    @property
    def end(self) -> int:
        """
        The last byte's position (inclusive, as C{Content-Range} writes it).
        """
        return self.start + self.length - 1


#: A Range that asks for nothing the file has: answer 416.
UNSATISFIABLE = "unsatisfiable"


def parseRange(value: bytes | None, size: int) -> Span | str | None:
    """
    The part of a file of C{size} bytes that a C{Range} header asks for.

    @return: a L{Span}; L{UNSATISFIABLE}; or L{None} when the header is
        absent or ignored (malformed, another unit, several ranges, an empty
        file): serve the whole file.
    """
    if value is None:
        return None
    unit, equals, rest = value.partition(b"=")
    if not equals or unit.strip().lower() != b"bytes":
        return None
    specs = rest.split(b",")
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0].strip(b" \t"))
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        n = int(suffix)
        if n == 0:
            return UNSATISFIABLE
        if size == 0:
            return None
        n = min(n, size)
        return Span(size - n, n)
    start = int(first)
    if last is not None and int(last) < start:
        return None  # invalid: RFC 9110 lets the server ignore the header
    if start >= size:
        return UNSATISFIABLE
    end = size - 1 if last is None else min(int(last), size - 1)
    return Span(start, end - start + 1)


@attrs.frozen
class Validators:
    """
    What identifies the file being served.

    @ivar etag: its strong entity tag, quoted (C{b'"abc"'}).
    @ivar modified: its modification time, whole seconds since the epoch.
    """

    etag: bytes
    modified: int


@attrs.frozen
class Conditions:
    """
    The request's headers that decide a download (each L{None} if absent).
    """

    ifMatch: bytes | None = None
    ifUnmodifiedSince: bytes | None = None
    ifNoneMatch: bytes | None = None
    ifModifiedSince: bytes | None = None
    ifRange: bytes | None = None
    range: bytes | None = None


@attrs.frozen
class Answer:
    """
    What to answer: C{status} 200, 206, 304, 412 or 416, and for 200/206 the
    L{Span} to send (C{None} for an empty file).
    """

    status: int
    span: Span | None = None


def parseETags(value: bytes) -> list[tuple[bool, bytes]] | None:
    """
    The entity tags of an C{If-None-Match} field: C{(weak, tag)} pairs, or
    L{None} for C{*}. Malformed members are skipped.
    """
    if value.strip() == b"*":
        return None
    tags = []
    for member in value.split(b","):
        match = _ETAG.fullmatch(member)
        if match is not None:
            tags.append((match.group(1) is not None, match.group(2)))
    return tags


def parseHTTPDate(value: bytes) -> int | None:
    """
    An HTTP date in whole seconds since the epoch, or L{None} if it is not one.

    Never raises: C{email.utils} raises C{OverflowError} for numbers too large
    for the platform (and other errors for other garbage), and a date that
    cannot be read is ignored by every header that carries one.
    """
    try:
        when = parsedate_to_datetime(value.decode("ascii"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return int((when - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    except Exception:
        return None


def _preconditionFails(conditions: Conditions, validators: Validators) -> bool:
    """
    RFC 9110 section 13.2.2 steps 1 and 2: C{If-Match} (strong comparison;
    C{*} holds, since the file exists), else C{If-Unmodified-Since}.
    """
    if conditions.ifMatch is not None:
        tags = parseETags(conditions.ifMatch)
        if tags is None:
            return False
        return not any(not weak and tag == validators.etag for weak, tag in tags)
    if conditions.ifUnmodifiedSince is not None:
        since = parseHTTPDate(conditions.ifUnmodifiedSince)
        return since is not None and validators.modified > since
    return False


def _notModified(conditions: Conditions, validators: Validators) -> bool:
    """
    RFC 9110 section 13.2.2 steps 3 and 4, for GET and HEAD.
    """
    if conditions.ifNoneMatch is not None:
        tags = parseETags(conditions.ifNoneMatch)
        # Weak comparison: the opaque tags alone.
        return tags is None or any(tag == validators.etag for _, tag in tags)
    if conditions.ifModifiedSince is not None:
        since = parseHTTPDate(conditions.ifModifiedSince)
        return since is not None and validators.modified <= since
    return False


def _rangeApplies(ifRange: bytes | None, validators: Validators, now: float) -> bool:
    """
    C{If-Range} (RFC 9110 section 13.1.5): the range holds only if the
    file is still the one the client has, by strong comparison of the entity
    tag, or by an exact match of a date that is a strong validator: the file
    was last modified at least a second before C{now}.
    """
    if ifRange is None:
        return True
    value = ifRange.strip()
    if value.startswith(b'"') or value.startswith(b"W/"):
        match = _ETAG.fullmatch(value)
        return match is not None and match.group(1) is None and match.group(2) == validators.etag
    return parseHTTPDate(value) == validators.modified and validators.modified + 1 <= now


def decide(
    head: bool, conditions: Conditions, size: int, validators: Validators, *, now: float
) -> Answer:
    """
    What a C{GET} (or, with C{head}, a C{HEAD}) of a complete file of
    C{size} bytes answers.

    @param now: the answer's time (its C{Date}), seconds since the epoch.
    """
    if _preconditionFails(conditions, validators):
        return Answer(412)
    if _notModified(conditions, validators):
        return Answer(304)
    whole = Answer(200, Span(0, size) if size else None)
    if head or not _rangeApplies(conditions.ifRange, validators, now):
        return whole
    wanted = parseRange(conditions.range, size)
    if wanted is None:
        return whole
    if wanted == UNSATISFIABLE:
        return Answer(416)
    assert isinstance(wanted, Span)
    return Answer(206, wanted)
