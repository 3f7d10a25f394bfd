"""
The public site, seen by the log and the metrics: each request gets an id
(sent back as C{X-Request-Id}) when its header block is complete, and one
access line and one count when it ends, answered or lost; connections are
counted while open.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web.http import datetimeToLogString

from uploadsvc.ops.logs import logAccess
from uploadsvc.ops.metrics import Metrics
from uploadsvc.ops.requestnotes import REQUEST_ID_HEADER, RequestNotes, notesFor
from uploadsvc.web.accesslog import redactURI, redactedLogFormatter
from uploadsvc.web.limits import LimitedSite


class ObservedSite(LimitedSite):
    """
    A L{LimitedSite} that logs every request through L{logAccess} (instead
    of the Site's own log file) and counts into C{metrics}.

    @ivar metrics: where requests and connections are counted, if anywhere.
    """

    def __init__(self, resource: Any, *, metrics: Metrics | None = None, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.metrics = metrics

    def getResourceFor(self, request: Any) -> Any:
        notes = notesFor(request)
        notes.started = self.reactor.seconds()
        request.setHeader(REQUEST_ID_HEADER, notes.requestId.encode("ascii"))
        return super().getResourceFor(request)

    def requestFinished(self, request: Any, result: object) -> None:
        if isinstance(result, Failure):
            # A request whose client goes away is never finished: no log() call.
            self._lost(request)

    def _lost(self, request: Any) -> None:
        """
        Log a request whose client went away once the app is done with it
        (its bytes made durable, its offsets final).
        """
        work = notesFor(request).work
        if work is None or work.called:
            self._ended(request, lost=True)
            return

        def ended(result: object) -> object:
            self._ended(request, lost=True)
            return result

        work.addBoth(ended)

    def log(self, request: Any) -> None:
        self._ended(request, lost=False)

    def _ended(self, request: Any, lost: bool) -> None:
        notes = notesFor(request)
        if getattr(request, "uploadsvcLogged", False):
            return
        request.uploadsvcLogged = True
        now = self.reactor.seconds()
        method = (request.method or b"-").decode("latin-1")
        path = redactURI(request.uri or b"").partition(b"?")[0].decode("latin-1")
        status: int | str = "lost" if lost else request.code
        address = request.getClientAddress()
        level = LogLevel.info
        extra: dict[str, Any] = {}
        if lost:
            line = f'"{method} {path}" {_lostWhy(request, notes)} rid={notes.requestId}'
            if notes.cutShort is not None:
                # The server ended it, not the client: an error to look at.
                level = LogLevel.error
                extra["cutShort"] = notes.cutShort
        else:
            line = f"{redactedLogFormatter(datetimeToLogString(now), request)} rid={notes.requestId}"
        logAccess(line, {
            "requestId": notes.requestId,
            "method": method,
            "path": path,
            "uploadId": notes.uploadId,
            "protocol": notes.protocol,
            "status": status,
            "bytes": notes.bytesWritten,
            "offsetBefore": notes.offsetBefore,
            "offsetAfter": notes.offsetAfter,
            "duration": None if notes.started is None else round(now - notes.started, 6),
            "client": getattr(address, "host", None) or getattr(address, "name", None),
            "credential": notes.credential,
            "responseBytes": _sent(request),
            **extra,
        }, level)
        if self.metrics is not None:
            self.metrics.requestEnded(method, status, notes.bytesWritten)

    def connectionOpened(self) -> None:
        if self.metrics is not None:
            self.metrics.connectionOpened()

    def connectionClosed(self) -> None:
        if self.metrics is not None:
            self.metrics.connectionClosed()


def _lostWhy(request: Any, notes: RequestNotes) -> str:
    """
    Why a request ended without its whole answer, and how far it got: the
    bytes its upload kept, and the body bytes of an answer already under
    way (sent on the connection, HTTP/2's still queued not counted; the
    client may not have read them all).
    """
    if notes.cutShort is not None:
        why = f"cut short: {notes.cutShort}"
    elif request.startedWriting:
        why = "lost: the client went away during the answer"
    else:
        why = "lost: the client went away before the answer"
    counts = []
    if request.startedWriting or request.method in (b"GET", b"HEAD"):
        sent = _sent(request) if request.startedWriting else 0
        lengths = request.responseHeaders.getRawHeaders(b"content-length") or []
        length = lengths[0].decode("latin-1") if len(lengths) == 1 else None
        total = f" of {length}" if length is not None and length.isdigit() else ""
        counts.append(f"{sent}{total} body bytes sent")
    if notes.offsetBefore is not None or not counts:
        counts.append(f"{notes.bytesWritten} bytes written")
    return f"{why} ({', '.join(counts)})"


def _sent(request: Any) -> int | None:
    """
    The response body bytes sent: those written, less those still queued
    on an HTTP/2 stream when the client left.
    """
    sent: int | None = getattr(request, "sentLength", None)
    if sent is None:
        return None
    return sent - getattr(request, "unsentLength", 0)
