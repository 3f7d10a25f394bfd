"""
The client's tus 1.0 decisions, sans IO (docs/protocol-tus.md): where the
endpoint is, what a creation sends, and what each answer means, raising
L{Retryable}, L{Fatal} or L{OffsetConflict} for the resume loop as
L{uploadsvc.client.decisions} does for path uploads.
"""

from __future__ import annotations

import base64
from typing import Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from uploadsvc.client.created import readCreated, readResourceOffset
from uploadsvc.client.decisions import Answer, Piece, refusal
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable

#: What every tus request carries.
TUS_HEADERS: Mapping[bytes, bytes] = {b"Tus-Resumable": b"1.0.0"}

_MARK = "/.tus/"


class NoTusEndpoint(ValueError):
    """
    A URL without the C{/.tus/} of a tus endpoint.
    """


def splitTusURL(url: str) -> tuple[str, str | None]:
    """
    The tus endpoint of a URL C{<server>[prefix]/.tus/[destination]} and
    the destination it names (percent-decoded; L{None} when there is none,
    so that the server picks C{incoming/<id>}).

    @raise NoTusEndpoint: the URL's path has no C{/.tus/}.
    """
    parts = urlsplit(url)
    at = parts.path.find(_MARK)
    if at < 0:
        raise NoTusEndpoint(f"with --protocol tus the URL names the tus endpoint (…/.tus/): {url}")
    endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path[: at + len(_MARK)], "", ""))
    rest = unquote(parts.path[at + len(_MARK):], errors="strict")
    return endpoint, rest or None


def creationHeaders(size: int, destination: str | None) -> dict[bytes, bytes]:
    """
    The headers of C{POST <endpoint>} for a file of C{size} bytes.
    """
    headers = {**TUS_HEADERS, b"Upload-Length": b"%d" % size}
    if destination is not None:
        headers[b"Upload-Metadata"] = b"filename " + base64.b64encode(destination.encode("utf-8"))
    return headers


def patchHeaders(offset: int) -> dict[bytes, bytes]:
    """
    The headers of a C{PATCH} of bytes from C{offset}.
    """
    return {
        **TUS_HEADERS,
        b"Upload-Offset": b"%d" % offset,
        b"Content-Type": b"application/offset+octet-stream",
    }


#: The upload's URL from the answer to its creation (as the draft's).
readCreation = readCreated

#: The upload's offset from the answer to C{HEAD} on it, or L{None} when it
#: is gone (as the draft's).
readOffset = readResourceOffset


def nextPatch(offset: int, size: int, chunkSize: int | None) -> Piece:
    """
    The bytes of the next C{PATCH}, the server holding C{offset} bytes of a
    file of C{size}: up to the end, or C{chunkSize} bytes when that is
    less. tus has no closing piece (no digest the server checks).
    """
    length = size - offset
    if chunkSize is not None:
        length = min(length, chunkSize)
    return Piece(offset, offset + length, size, False)


def readPatch(answer: Answer, start: int, size: int, sendsCredentials: bool) -> int:
    """
    Read the answer to a C{PATCH} from C{start}: the server's new offset.

    @raise OffsetConflict: C{409} with the server's offset.
    @raise Retryable: C{460} (the bytes were damaged on the way) and what
        L{refusal} retries.
    """
    if answer.code in (200, 201, 204):
        offset = answer.intHeader(b"Upload-Offset")
        if offset is None:
            raise Retryable("the server did not report an Upload-Offset")
        if offset > size:
            raise Fatal(f"the server holds {offset} bytes; the file has {size}")
        return offset
    if answer.code == 409:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is not None:
            raise OffsetConflict(offset)
    if answer.code == 460:
        raise Retryable(answer.reason())
    raise refusal(answer, size, sendsCredentials)
