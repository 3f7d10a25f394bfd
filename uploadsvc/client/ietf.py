"""
The client's decisions for the IETF resumable-upload draft, sans IO
(docs/protocol-ietf.md): where a URL creates its upload, what a creation,
an offset query and an append send, and what each answer means, raising
L{Retryable}, L{Fatal} or L{OffsetConflict} for the resume loop in
L{uploadsvc.client.ietfupload} as L{uploadsvc.client.decisions} does for
path uploads.

The client speaks interop version 6 (drafts -04/-05): the one that
tus-js-client, Apple's URLSession (iOS 18.1+) and tusd speak, so a server
that serves any of them serves this client too.
"""

from __future__ import annotations

from typing import Mapping
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import attrs

from uploadsvc.client.created import readCreated, readResourceOffset
from uploadsvc.client.decisions import Answer, Completed, Piece, digestField, readDataAnswer
from uploadsvc.client.errors import Fatal, OffsetConflict

#: The interop version every request names.
INTEROP_VERSION = 6

#: What every draft request carries.
DRAFT_HEADERS: Mapping[bytes, bytes] = {b"Upload-Draft-Interop-Version": b"%d" % INTEROP_VERSION}

PARTIAL_UPLOAD = b"application/partial-upload"

_MARK = "/.uploads/"


@attrs.frozen
class DraftTarget:
    """
    Where one file's upload is created, and where the complete file will be.

    @ivar creationURL: C{POST}ed to create the upload: the server's
        C{/.uploads/} endpoint, or the file's own URL.
    @ivar destination: the place under the storage root sent in
        C{Content-Disposition} at the endpoint (decoded), or L{None}: the
        file's URL names it, or (at the endpoint) the server picks
        C{incoming/...}.
    @ivar fileURL: the URL of the complete file, when known: asked when the
        answer to the completing request was lost and the upload is gone.
    """

    creationURL: str
    destination: str | None
    fileURL: str | None


def draftTarget(url: str) -> DraftTarget:
    """
    Read a job's URL: C{<server>[prefix]/.uploads/[destination]} creates at
    the draft's endpoint; any other URL is the file's own path, which the
    creation names (as C{PUT} does).

    @raise UnicodeDecodeError: a destination that is not UTF-8 once decoded.
    """
    parts = urlsplit(url)
    at = parts.path.find(_MARK)
    if at < 0:
        return DraftTarget(url, None, url)
    endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path[: at + len(_MARK)], "", ""))
    rest = parts.path[at + len(_MARK):]
    destination = unquote(rest, errors="strict") or None
    fileURL = None
    if destination is not None:
        fileURL = urlunsplit((parts.scheme, parts.netloc, parts.path[:at] + "/" + rest, "", ""))
    return DraftTarget(endpoint, destination, fileURL)


def creationHeaders(size: int, destination: str | None, digest: bytes | None = None) -> dict[bytes, bytes]:
    """
    The headers of the creation of a file of C{size} bytes: with no body
    and C{Upload-Complete: ?0}, so that the C{201} carries the upload's URL
    (treq never shows the C{104} that would carry it sooner). An empty file
    is created complete (C{?1}, its C{Repr-Digest} given).

    @param destination: for C{Content-Disposition} at the endpoint.
    @param digest: the sha-256 of an empty file, for C{size == 0}.
    """
    headers = {
        **DRAFT_HEADERS,
        b"Upload-Complete": b"?1" if size == 0 else b"?0",
        b"Upload-Length": b"%d" % size,
    }
    if size == 0 and digest is not None:
        headers[b"Repr-Digest"] = digestField(digest)
    if destination is not None:
        encoded = quote(destination, safe="").encode("ascii")
        headers[b"Content-Disposition"] = b"attachment; filename*=UTF-8''" + encoded
    return headers


#: The upload's URL from the answer to its creation (as tus's).
readCreation = readCreated


def nextAppend(offset: int, size: int, chunkSize: int | None, finalPiece: int) -> Piece:
    """
    The bytes of the next C{PATCH}, the server holding C{offset} bytes of a
    file of C{size}: up to the closing piece (the last C{finalPiece} bytes,
    which completes the upload and carries the digest), or C{chunkSize}
    bytes when that is less; from there on the rest of the file (nothing,
    when the server holds it all but has not completed it).
    """
    closing = offset >= size - finalPiece
    length = size - offset
    if not closing:
        length = min(length, size - finalPiece - offset)
        if chunkSize is not None:
            length = min(length, chunkSize)
    return Piece(offset, offset + length, size, closing)


def appendHeaders(offset: int, complete: bool, digest: bytes | None = None) -> dict[bytes, bytes]:
    """
    The headers of a C{PATCH} of bytes from C{offset}; the one that ends
    the upload carries the whole file's C{Repr-Digest}, so the server
    refuses a damaged whole instead of completing it.
    """
    headers = {
        **DRAFT_HEADERS,
        b"Content-Type": PARTIAL_UPLOAD,
        b"Upload-Offset": b"%d" % offset,
        b"Upload-Complete": b"?1" if complete else b"?0",
    }
    if digest is not None:
        headers[b"Repr-Digest"] = digestField(digest)
    return headers


#: The upload's offset from the answer to C{HEAD} on it, or L{None} when it
#: is gone (as tus's).
readOffset = readResourceOffset


def readAppend(answer: Answer, start: int, size: int, sendsCredentials: bool) -> int | Completed:
    """
    Read the answer to a C{PATCH} from C{start}: the server's new offset,
    or L{Completed} (to check its C{Repr-Digest}) when it ended the upload.

    @raise OffsetConflict: C{409} with the server's C{Upload-Offset} (the
        draft's mismatching-upload-offset).
    """
    if answer.code == 409:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is not None and offset != start and 0 <= offset <= size:
            raise OffsetConflict(offset)
    if answer.code == 204:
        offset = answer.intHeader(b"Upload-Offset")
        if offset is not None and offset > size:
            raise Fatal(f"the server holds {offset} bytes; the file has {size}")
    return readDataAnswer(answer, start, size, sendsCredentials)
