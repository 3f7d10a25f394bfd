"""
What the log and the metrics want to know about one request, noted on the
request by whoever learns it: the site (its id, when it started), the
credentials check (the credential's name), the app (the upload's offsets).

Kept as one small value on the request (L{notesFor}) rather than as loose
attributes, so that a front end or a check that knows something has one
place to put it, and the access log line one place to read it.
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs
from twisted.internet.defer import Deferred

#: The response header that carries the request's id.
REQUEST_ID_HEADER = b"X-Request-Id"


def newRequestId() -> str:
    """
    A short random id for one request (16 hex digits: unique enough to
    find one request among a day's, short enough to read out).
    """
    return secrets.token_hex(8)


@attrs.define
class RequestNotes:
    """
    @ivar requestId: the request's id (also sent as L{REQUEST_ID_HEADER}).
    @ivar started: when its header block was complete (the site's clock).
    @ivar credential: the name (never the secret) of the credential that
        let it through; set by the credentials check when it knows one.
    @ivar path: the upload's destination, relative to the root, once parsed.
    @ivar uploadId: the upload's server-assigned id (tus, the draft), if any.
    @ivar protocol: the front end that serves it: C{"put"}, C{"tus"} or
        C{"ietf"} (for events).
    @ivar offsetBefore: the upload's offset when this request began writing.
    @ivar offsetAfter: its offset when this request stopped writing.
    @ivar cutShort: why the server ended the answer before its end (its
        connection dropped: a download whose file shrank), if it did; the
        access line says so instead of blaming the client.
    @ivar work: what the app still does for the request (its bytes made
        durable after the client went away), if anything: the access line
        of a lost request waits for it, so that its offsets are final.
    """

    requestId: str = attrs.field(factory=newRequestId)
    started: float | None = None
    credential: str | None = None
    path: str | None = None
    uploadId: str | None = None
    protocol: str = "put"
    offsetBefore: int | None = None
    offsetAfter: int | None = None
    cutShort: str | None = None
    work: Deferred | None = None

    @property
    def bytesWritten(self) -> int:
        """
        Bytes this request added to its upload (0 if it wrote none).
        """
        if self.offsetBefore is None or self.offsetAfter is None:
            return 0
        return max(0, self.offsetAfter - self.offsetBefore)


def notesFor(request: Any) -> RequestNotes:
    """
    The notes of C{request}, made (with a fresh id) the first time.
    """
    notes: RequestNotes | None = getattr(request, "uploadsvcNotes", None)
    if notes is None:
        notes = RequestNotes()
        request.uploadsvcNotes = notes
    return notes
