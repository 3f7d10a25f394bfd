"""
The offset decision: what a write request does to what is stored.

Pure: a function of small frozen values. It answers with a L{Plan} (write
these bytes of the body from this offset), L{AlreadyComplete} (a retry of a
finished upload), or raises the L{UploadError} that docs/protocol.md gives.
"""

from __future__ import annotations

import attrs

from uploadsvc.errors import BadRequest, Conflict, NotFound
from uploadsvc.protocol.ranges import ContentRange


@attrs.frozen
class Stored:
    """
    What the store holds for one path.

    @ivar offset: bytes staged by an incomplete upload (0 when none).
    @ivar total: the upload's recorded length, when known.
    @ivar incomplete: an incomplete upload exists.
    @ivar digests: C{Repr-Digest} values recorded for it (alg to base64).
    @ivar completeSize: size of the complete file at the destination, if any.
    """

    offset: int = 0
    total: int | None = None
    incomplete: bool = False
    digests: dict[str, str] = attrs.field(factory=dict)
    completeSize: int | None = None


@attrs.frozen
class Plan:
    """
    Write part of the body.

    @ivar startOver: discard what is staged first.
    @ivar offset: the staged offset writing starts at.
    @ivar skip: body bytes already stored (an overlapping retry): dropped.
    @ivar take: body bytes to keep after those; L{None} for all of a body of
        unknown length.
    @ivar total: the upload's length to record, when known.
    """

    startOver: bool
    offset: int
    skip: int
    take: int | None
    total: int | None


@attrs.frozen
class AlreadyComplete:
    """
    A retry of a request whose answer was lost: the file is complete.
    """

    size: int


def offsetHeaders(offset: int) -> dict[bytes, bytes]:
    """
    The headers that tell a client where to resume.
    """
    headers = {b"Upload-Offset": b"%d" % offset, b"Upload-Complete": b"?0"}
    if offset > 0:
        headers[b"Range"] = b"bytes=0-%d" % (offset - 1)
    return headers


def _checkTotal(stored: Stored, total: int | None) -> None:
    if total is not None and stored.total is not None and total != stored.total:
        raise Conflict(
            "length-mismatch",
            f"upload length is {stored.total}, not {total}",
            {b"Upload-Length": b"%d" % stored.total},
        )


def _checkReachable(stored: Stored, total: int | None) -> None:
    """
    Refuse a total below what is already stored: the upload could never
    end at it (docs/protocol.md section 3, a 409 about the state, like a total
    that differs from the recorded one).
    """
    if total is not None and total < stored.offset:
        headers = offsetHeaders(stored.offset)
        if stored.total is not None:
            headers[b"Upload-Length"] = b"%d" % stored.total
        raise Conflict(
            "length-below-offset",
            f"upload length {total} is below the {stored.offset} bytes already stored",
            headers,
        )


def planWrite(
    stored: Stored,
    contentRange: ContentRange | None,
    contentLength: int | None,
    allowOverwrite: bool,
) -> Plan | AlreadyComplete:
    """
    Decide a PUT that carries data, from its headers alone.

    @param contentRange: the parsed C{Content-Range}, L{None} for a plain PUT.
    @param contentLength: the body's declared length, L{None} when chunked.
    """
    existing = stored.completeSize
    if contentRange is None:
        if existing is not None and not allowOverwrite:
            raise Conflict("exists", "a complete file is already there")
        return Plan(True, 0, 0, contentLength, contentLength)

    total = contentRange.total
    if stored.incomplete:
        _checkTotal(stored, total)
        known = total if total is not None else stored.total
        if known is not None and contentRange.last >= known:
            # bytes S-E/* of an upload whose total is recorded: as E >= T.
            raise BadRequest(
                "range-past-length",
                f"Content-Range end {contentRange.last} is not below the "
                f"upload length {known}",
                {b"Upload-Length": b"%d" % known},
            )
        _checkReachable(stored, known)
        offset = stored.offset
        if contentRange.first > offset:
            raise Conflict(
                "offset-mismatch",
                f"upload offset is {offset}, not {contentRange.first}",
                offsetHeaders(offset),
            )
        skip = min(offset - contentRange.first, contentRange.length)
        return Plan(
            False,
            offset,
            skip,
            contentRange.length - skip,
            total if total is not None else stored.total,
        )
    if existing is not None:
        if allowOverwrite and contentRange.first == 0:
            return Plan(True, 0, 0, contentRange.length, total)
        if total == existing and contentRange.last < existing:
            return AlreadyComplete(existing)
        raise Conflict("exists", "a complete file is already there")
    if contentRange.first > 0:
        raise Conflict(
            "offset-mismatch",
            f"upload offset is 0, not {contentRange.first}",
            offsetHeaders(0),
        )
    return Plan(True, 0, 0, contentRange.length, total)


def checkQuery(stored: Stored, total: int | None) -> Stored:
    """
    Decide a status query (C{HEAD}, or C{PUT} with C{bytes */T}).

    @return: C{stored}, to be answered as incomplete or complete.
    @raise NotFound: nothing is there.
    @raise Conflict: C{total} differs from the recorded one, or is below the
        stored offset.
    """
    if stored.incomplete:
        _checkTotal(stored, total)
        _checkReachable(stored, total)
        return stored
    if stored.completeSize is not None:
        if total is not None and total != stored.completeSize:
            raise Conflict(
                "length-mismatch",
                f"upload length is {stored.completeSize}, not {total}",
                {b"Upload-Length": b"%d" % stored.completeSize},
            )
        return stored
    raise NotFound("not-found", "no upload at this path")


def queryCompletes(stored: Stored) -> bool:
    """
    Whether a C{PUT} status query (C{bytes */T}, after T is recorded) finds
    an upload fully staged but never moved into place (a crash or a failed
    rename after its last byte): it then completes it, so that no request
    with an empty range is ever needed. A C{HEAD} only reports it.
    """
    return stored.incomplete and stored.total is not None and stored.offset == stored.total


def planFinish(stored: Stored) -> Plan | None:
    """
    The plan of a status query that completes a fully staged upload (see
    L{queryCompletes}): nothing to write, the total reached; L{None} when
    the upload is not (or no longer) fully staged.
    """
    if not queryCompletes(stored):
        return None
    return Plan(False, stored.offset, 0, 0, stored.total)
