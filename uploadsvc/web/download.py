"""
Downloads (C{--allow-download}): C{GET} and C{HEAD} of a complete file.

What to answer is decided by L{uploadsvc.protocol.byteranges}; here the file
is opened through the store (never following a link: L{IUploadStore.openComplete}),
the headers are written, and the body streams through L{FileProducer}: one
chunk at a time read in the disk pool, none while the connection's send
buffer is full, so a download costs about one chunk of memory whatever the
file's size.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from zope.interface import implementer

from uploadsvc.errors import NotFound, UploadError
from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.protocol.byteranges import Conditions, Span, Validators, decide
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.sink import IDiskRunner
from uploadsvc.storage.interfaces import ICompleteFile
from uploadsvc.web.streaming import abortRequest

log = Logger()

#: Bytes read from disk per trip to the pool.
CHUNK_SIZE = 256 * 1024


def etagOf(opened: Any) -> bytes:
    """
    A strong entity tag for an opened file: a digest of its version (which
    changes whenever the file is replaced), so nothing of the disk's layout
    is shown.
    """
    return b'"%s"' % hashlib.sha256(opened.version.encode("utf-8")).hexdigest()[:32].encode()


def conditionsOf(request: Any) -> Conditions:
    """
    The headers of C{request} that decide a download.

    A list field sent on several lines (C{If-Match}, C{If-None-Match}) is
    one list: its lines joined with commas (RFC 9110 section 5.3). C{Range}
    and C{If-Range} on several lines are joined too, which makes them
    unreadable, so the whole file is sent (the safe reading of an
    ambiguous request); of the dates, the first line counts.
    """

    def first(name: bytes) -> bytes | None:
        values = request.requestHeaders.getRawHeaders(name)
        return values[0] if values else None

    def joined(name: bytes) -> bytes | None:
        values = request.requestHeaders.getRawHeaders(name)
        return b", ".join(values) if values else None

    return Conditions(
        ifMatch=joined(b"If-Match"),
        ifUnmodifiedSince=first(b"If-Unmodified-Since"),
        ifNoneMatch=joined(b"If-None-Match"),
        ifModifiedSince=first(b"If-Modified-Since"),
        ifRange=joined(b"If-Range"),
        range=joined(b"Range"),
    )


def answerTime(request: Any) -> float:
    """
    The time of C{request}'s answer (its C{Date}), on the clock of the site
    that serves it (twisted.web's C{HTTPFactory} keeps the reactor it was
    given: injected in tests, the reactor in the daemon).
    """
    return float(request.site.reactor.seconds())


def writeFileHeaders(request: Any, opened: Any, etag: bytes) -> None:
    """
    The headers every answer about a complete file carries (200, 206, 304,
    and a status query's 200 with downloads on).
    """
    request.setHeader(b"ETag", etag)
    request.setHeader(b"Last-Modified", datetimeToString(opened.modified))
    request.setHeader(b"Accept-Ranges", b"bytes")
    # Cacheable, but checked again each time: the file may be replaced.
    request.setHeader(b"Cache-Control", b"no-cache")


class PreconditionFailed(UploadError):
    status = 412


async def serveFile(
    request: Any, store: Any, runner: IDiskRunner, path: UploadPath, head: bool
) -> bytes | None:
    """
    Answer a download of the complete file at C{path}; an incomplete upload
    is never served (404).

    @return: the body for Klein (empty), or L{None} once a streamed body
        was cut short (the connection is closed: nothing more is owed).
    """
    try:
        opened: ICompleteFile = await runner.run(store.openComplete, path)
    except FileNotFoundError:
        raise NotFound("not-found", "no file at this path") from None
    streaming = False
    try:
        etag = etagOf(opened)
        now = answerTime(request)
        answer = decide(
            head, conditionsOf(request), opened.size, Validators(etag, opened.modified), now=now
        )
        # The Date that the If-Range decision was made against.
        request.setHeader(b"Date", datetimeToString(int(now)))
        if answer.status == 412:
            raise PreconditionFailed(
                "precondition-failed", "the file is not the one If-Match or "
                "If-Unmodified-Since names", {b"ETag": etag},
            )
        request.setResponseCode(answer.status)
        writeFileHeaders(request, opened, etag)
        request.setHeader(b"Upload-Complete", b"?1")
        request.setHeader(b"Upload-Offset", b"%d" % opened.size)
        if answer.status == 304:
            return b""
        if answer.status == 416:
            request.setHeader(b"Content-Range", b"bytes */%d" % opened.size)
            request.setHeader(b"Content-Length", b"0")
            return b""
        span = answer.span or Span(0, 0)
        if answer.status == 206:
            request.setHeader(
                b"Content-Range", b"bytes %d-%d/%d" % (span.start, span.end, opened.size)
            )
        request.setHeader(b"Content-Length", b"%d" % span.length)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        if head or span.length == 0:
            return b""
        # From here the producer owns the file and closes it on every path.
        streaming = True
        complete = await FileProducer(runner, opened, span, request).start()
        return b"" if complete else None
    finally:
        if not streaming:
            await runner.run(opened.close)


@implementer(IPushProducer)
class FileProducer:
    """
    Streams part of an opened file into a request, reading one chunk at a
    time in the disk pool; pausing (the send buffer is full) stops the reads
    until the transport drains.

    The file is closed (in the pool) when the part is sent or the request
    ends otherwise, including when its client left before L{start}.

    A request cut short ends only once the request itself knows that its
    client left (its C{notifyFinish} fails): the transport stops its
    producer before it tells the request, and ending earlier would let Klein
    finish the request as if answered (logged as a 200 with part of the
    body) instead of lost.
    """

    def __init__(
        self, runner: IDiskRunner, opened: Any, span: Span, request: Any,
        chunkSize: int = CHUNK_SIZE,
    ) -> None:
        self._runner = runner
        self._opened = opened
        self._offset = span.start
        self._left = span.length
        self._request = request
        self._chunkSize = chunkSize
        self._paused = False
        self._reading = False
        self._done: Deferred | None = None
        self._stopped = False
        self._closed = False
        #: Chunks read from disk, for tests.
        self.reads = 0

    def start(self) -> Deferred:
        """
        Begin; the result fires with C{True} once every byte was written,
        C{False} if the request ended first (the client went away).
        """
        self._done = Deferred()
        if _clientGone(self._request):
            # It left while the file was being opened: nothing to send.
            self._stopped = True
            self._close()
            self._done.callback(False)
            return self._done
        try:
            self._request.registerProducer(self, True)
        except BaseException:
            self._stopped = True
            self._close()
            raise
        self._request.notifyFinish().addErrback(lambda _: self._lost())
        self._readNext()
        return self._done

    def _readNext(self) -> None:
        if self._paused or self._reading or self._stopped or self._done is None:
            return
        if self._left == 0:
            self._end(True)
            return
        self._reading = True
        d = self._runner.run(self._opened.read, self._offset, min(self._chunkSize, self._left))
        d.addCallbacks(self._gotChunk, self._readFailed)

    def _gotChunk(self, data: bytes) -> None:
        self._reading = False
        self.reads += 1
        if self._stopped:
            self._close()
            return
        if not data:
            # The file shrank under us (rewritten in place by someone else):
            # the promised length cannot be kept, so the connection ends
            # (the access line says why, at error level).
            self._abort("the file shrank while it was read")
            return
        self._offset += len(data)
        self._left -= len(data)
        self._request.write(data)  # may pause us at once
        self._readNext()

    def _readFailed(self, failure: Failure) -> None:
        self._reading = False
        if self._stopped:
            self._close()
            return
        log.failure("reading a file for a download", failure)
        self._abort("reading the file failed")

    def _abort(self, why: str) -> None:
        """
        End the answer before its end by dropping the connection.

        @param why: what the access line says instead of blaming the client.
        """
        notesFor(self._request).cutShort = why
        self._stop()
        abortRequest(self._request)
        if _clientGone(self._request):
            self._lost()
        # Else the request learns it lost its client once the abort lands.

    def _end(self, complete: bool) -> None:
        self._stop()
        assert self._done is not None
        if not self._done.called:
            self._done.callback(complete)

    def _stop(self) -> None:
        """
        Read no more and close the file; the request is told nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        if not _clientGone(self._request):
            self._request.unregisterProducer()
        if not self._reading:
            # Else once the read in flight returns: closing under it could
            # let the descriptor's number name another file meanwhile.
            self._close()

    def _lost(self) -> None:
        """
        The request's client is gone (and the request knows it): end.
        """
        self._end(False)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._runner.run(self._opened.close).addErrback(
            lambda f: log.failure("closing a downloaded file", f)
        )

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._readNext()

    def stopProducing(self) -> None:
        # The connection is going: the request is told next (L{_lost}).
        self._stop()


def _clientGone(request: Any) -> bool:
    """
    Whether C{request} has no connection any more (its client left, or it
    was finished): twisted.web drops a request's C{channel} then.
    """
    return getattr(request, "channel", None) is None
