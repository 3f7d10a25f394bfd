"""
The client's tus 1.0 decisions, sans IO (docs/protocol-tus.md): where the
endpoint is, what a creation sends, and what each answer means, raising
L{Retryable}, L{Fatal} or L{OffsetConflict} for the resume loop as
L{uploadsvc.client.decisions} does for path uploads.
"""

from __future__ import annotations

import base64
from typing import Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from uploadsvc.client.decisions import Answer, refusal
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


def readCreation(answer: Answer, endpoint: str, size: int, sendsCredentials: bool) -> str:
    """
    The URL of the upload a creation made (its C{Location}, resolved
    against the endpoint).
    """
    if answer.code == 201:
        location = answer.header(b"Location")
        if location is None:
            raise Fatal("the server created the upload but sent no Location")
        return urljoin(endpoint, location.decode("latin-1"))
    raise refusal(answer, size, sendsCredentials)


def readOffset(answer: Answer, size: int, sendsCredentials: bool) -> int | None:
    """
    Read the answer to C{HEAD <upload>}: its offset, or L{None} when the
    upload is gone (expired, removed: create it again).
    """
    if answer.code in (404, 410):
        return None
    if answer.code in (200, 204):
        offset = answer.intHeader(b"Upload-Offset")
        if offset is None:
            raise Fatal("the server did not report an Upload-Offset")
        total = answer.intHeader(b"Upload-Length")
        if total is not None and total != size:
            raise Fatal(f"the server's upload is of {total} bytes; the file has {size}")
        if offset > size:
            raise Fatal(f"the server holds {offset} bytes; the file has {size}")
        return offset
    raise refusal(answer, size, sendsCredentials)


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
