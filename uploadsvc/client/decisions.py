"""
The client's decisions, sans IO: which bytes the next request carries, and
what an answer means (docs/protocol.md sections 2-4).

Functions of small frozen values (an L{Answer}, sizes and offsets), as
L{uploadsvc.protocol.decisions} is for the server: no reactor, no file, no
socket. L{nextPiece} chooses the next range; L{readQuery}, L{readDataAnswer}
and L{checkDigest} read answers and raise L{Retryable}, L{Fatal} or
L{OffsetConflict} (from L{uploadsvc.client.errors}) for the resume loop in
L{uploadsvc.client.putupload}. Keeping them here lets them be tested as
tables and properties, apart from the HTTP plumbing
(L{uploadsvc.client.exchange}).
"""

from __future__ import annotations

import base64
import re
from typing import Mapping

import attrs

from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable
from uploadsvc.protocol.digests import formatDigest, parseDigestHeader
from uploadsvc.protocol.ranges import ContentRange

#: The size of the closing piece that carries C{Repr-Digest}.
FINAL_PIECE = 64 * 1024

#: The longest C{Retry-After} honoured, in seconds.
MAX_RETRY_AFTER = 600.0

#: The title of an HTML error page (nginx sends those), used as its reason.
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _lowerNames(headers: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in headers.items()}


@attrs.frozen
class Answer:
    """
    A response, read whole.

    @ivar code: the status code.
    @ivar headers: header name (matched without case) to value, the values
        of a repeated header joined with C{", "}.
    @ivar body: the start of the body (the HTTP plumbing cuts long ones).
    """

    code: int
    headers: Mapping[bytes, bytes] = attrs.field(factory=dict, converter=_lowerNames)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """
        The value of the header C{name}, or L{None}.
        """
        return self.headers.get(name.lower())

    def intHeader(self, name: bytes) -> int | None:
        """
        The header C{name} as a non-negative integer, or L{None} when absent.

        @raise Retryable: when it is not one (a garbled answer: try again).
        """
        value = self.header(name)
        if value is None:
            return None
        if not value.strip().isdigit():
            raise Retryable(f"server sent a malformed {name.decode()} header")
        return int(value)

    def detail(self) -> str:
        """
        The server's reason: the first line of a text body, the title of an
        HTML page (as nginx sends), or nothing; printable, at most 200
        characters.
        """
        text = self.body.decode("utf-8", "replace").strip()
        if text.startswith("<"):
            title = _TITLE.search(text)
            line = " ".join(title.group(1).split()) if title else ""
        else:
            lines = text.splitlines()
            line = lines[0] if lines else ""
        return "".join(c if c.isprintable() else "?" for c in line[:200])

    def reason(self) -> str:
        """
        C{HTTP <code>}, and the server's reason when it gave one.
        """
        detail = self.detail()
        return f"HTTP {self.code}" + (f": {detail}" if detail else "")


# -- the next range -------------------------------------------------------------


@attrs.frozen
class Piece:
    """
    The bytes C{[start, end)} of a file of C{total} bytes that the next data
    request carries.

    @ivar closing: this is the closing piece: the whole file's digest must
        be known before it is sent, so that it can carry C{Repr-Digest}.
    """

    start: int
    end: int
    total: int
    closing: bool

    @property
    def length(self) -> int:
        """
        The body length.
        """
        return self.end - self.start

    def contentRange(self) -> bytes | None:
        """
        The C{Content-Range} header, or L{None} for an empty file, which no
        range can describe: it goes as a plain C{PUT} (section 2).
        """
        if self.total == 0:
            return None
        return ContentRange(self.start, self.end - 1, self.total).toHeader()


def nextPiece(offset: int, size: int, chunkSize: int | None, finalPiece: int = FINAL_PIECE) -> Piece:
    """
    Choose the bytes of the next data request, the server holding C{offset}
    bytes of a file of C{size}.

    Below the closing piece (the last C{finalPiece} bytes) a request runs
    from C{offset} up to it, or C{chunkSize} bytes when that is less; from
    there on it is the closing piece from C{offset} to the end. A server
    that holds the whole file (C{offset >= size}) is sent the whole closing
    piece again: its answer confirms the stored digest.

    @param offset: the server's offset (not negative).
    @param size: the file size (not negative).
    @param chunkSize: the most bytes per request below the closing piece,
        or L{None} for no limit.
    @param finalPiece: the size of the closing piece (positive).
    """
    if size == 0:
        return Piece(0, 0, 0, True)
    finalStart = max(0, size - finalPiece)
    if offset < finalStart:
        end = finalStart if chunkSize is None else min(offset + chunkSize, finalStart)
        return Piece(offset, end, size, False)
    return Piece(offset if offset < size else finalStart, size, size, True)


def digestField(digest: bytes) -> bytes:
    """
    The C{Repr-Digest} header for the file's sha-256 C{digest}.
    """
    return formatDigest("sha-256", digest)


# -- reading answers ------------------------------------------------------------


@attrs.frozen
class Held:
    """
    What a status query found at the URL.

    @ivar offset: the bytes the server holds (the file size when complete).
    @ivar complete: the complete file is there.
    """

    offset: int
    complete: bool


@attrs.frozen
class Completed:
    """
    The server completed the upload; check its digest against the file's.

    @ivar digest: the C{Repr-Digest} it answered with, or L{None}.
    """

    digest: bytes | None


def retryAfter(answer: Answer) -> float | None:
    """
    The C{Retry-After} of C{answer} in seconds (a number of seconds only,
    at most L{MAX_RETRY_AFTER}), or L{None}.
    """
    value = answer.header(b"Retry-After")
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value), MAX_RETRY_AFTER)


def refusal(answer: Answer, size: int, sendsCredentials: bool) -> Retryable | Fatal:
    """
    What an answer that is neither a success nor a C{409} with a usable
    offset means: C{408}, C{429} and C{5xx} are worth another attempt
    (after C{Retry-After}); any other is final.

    @param size: the file size, for a C{409} about another total.
    @param sendsCredentials: whether the requests carry C{Authorization},
        which a C{401} message says.
    @return: the exception to raise.
    """
    if answer.code in (408, 429) or 500 <= answer.code <= 599:
        return Retryable(answer.reason(), retryAfter(answer))
    if answer.code == 401:
        # Never retried: the same credentials get the same answer.
        detail = answer.detail()
        what = (
            "the server refused the credentials"
            if sendsCredentials
            else "the server asks for credentials (none were sent)"
        )
        return Fatal(f"HTTP 401: {what}" + (f" ({detail})" if detail else ""))
    if answer.code == 403:
        return Fatal(f"HTTP 403: {answer.detail() or 'forbidden'}")
    if answer.code == 409:
        recorded = answer.intHeader(b"Upload-Length")
        if recorded is not None and recorded != size:
            return Fatal(
                f"the server recorded a total of {recorded} bytes for this URL;"
                f" the file has {size} ({answer.reason()})"
            )
    return Fatal(answer.reason())


def readQuery(answer: Answer, size: int, sendsCredentials: bool) -> Held:
    """
    Read the answer to a C{HEAD}: how much of a file of C{size} bytes the
    server holds (404: nothing yet).

    @raise Fatal: when the server holds something that cannot become this
        file (another total, more bytes, another complete file), or refuses.
    @raise Retryable: for an answer worth another attempt.
    """
    if answer.code == 404:
        return Held(0, False)
    if answer.code == 204:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is None:
            raise Fatal("the server did not report an Upload-Offset")
        total = answer.intHeader(b"Upload-Length")
        if total is not None and total != size:
            raise Fatal(
                f"the server holds an incomplete upload of {total} bytes"
                f" at this URL; the file has {size}"
            )
        if offset > size:
            raise Fatal(f"the server holds {offset} bytes; the file has {size}")
        return Held(offset, False)
    if answer.code == 200:
        stored = answer.intHeader(b"Upload-Offset")
        if stored is None:
            stored = answer.intHeader(b"Content-Length")
        if stored != size:
            raise Fatal(
                f"a different file ({stored} bytes) already exists at this URL;"
                f" the file has {size}"
            )
        return Held(size, True)
    raise refusal(answer, size, sendsCredentials)


def readDataAnswer(answer: Answer, start: int, size: int, sendsCredentials: bool) -> int | Completed:
    """
    Read the answer to a data request that started at C{start}.

    A C{409} whose C{Upload-Offset} is below C{start} is an offset conflict:
    go on from the server's offset. Any other C{409} (the file exists with
    other content, a different total) is final.

    @return: the server's new offset, or L{Completed} when it completed the
        upload (at the file's size).
    @raise OffsetConflict: for a C{409} with an offset below C{start}.
    @raise Fatal: for a final refusal, or a completion at another size.
    @raise Retryable: for an answer worth another attempt.
    """
    if answer.code in (200, 201):
        stored = answer.intHeader(b"Upload-Offset")
        if stored is not None and stored != size:
            raise Fatal(f"the server completed the upload at {stored} bytes; the file has {size}")
        return Completed(answer.header(b"Repr-Digest"))
    if answer.code == 204:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is None:
            raise Retryable("the server did not report an Upload-Offset")
        return offset
    if answer.code == 409:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is not None and offset < start:
            raise OffsetConflict(offset)
    raise refusal(answer, size, sendsCredentials)


def checkDigest(completed: Completed, ours: bytes) -> None:
    """
    Check the digest the server completed the upload with against the
    file's sha-256 C{ours}.

    @raise Fatal: when it is missing, malformed, has no sha-256, or differs.
    """
    field = completed.digest
    if field is None:
        raise Fatal("the server did not send a Repr-Digest for the completed file")
    try:
        theirs = parseDigestHeader(field).get("sha-256")
    except Exception:
        raise Fatal("the server sent a malformed Repr-Digest") from None
    if theirs is None:
        raise Fatal("the server's Repr-Digest has no sha-256")
    if theirs != ours:
        raise Fatal(
            "the stored file differs: server sha-256 "
            f"{base64.b64encode(theirs).decode()}, local {base64.b64encode(ours).decode()}"
        )
