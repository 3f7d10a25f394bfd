"""
The resuming upload client: send a file, and when the link fails, ask the
server how much it kept and go on from there, until the file is complete and
its digest checked.

One file's upload is a loop of requests (docs/protocol.md sections 2-4):
  1. C{HEAD} the URL for the stored offset (404: nothing yet);
  2. send from the offset with C{Content-Range: bytes S-E/T}: one long
     request up to the closing piece, or C{chunkSize} pieces;
  3. send the closing piece (the last L{FINAL_PIECE} bytes) with
     C{Repr-Digest} of the whole file, and check the C{Repr-Digest} the
     server answers with.
A C{409} with C{Upload-Offset} moves the offset without a new C{HEAD}. Any
other failure (refused, reset, lost, no progress for C{stallTimeout}
seconds, 5xx) waits per the L{RetryPolicy} and starts again at step 1. The
server keeps every byte it read, so nothing is sent twice beyond what was in
flight when the link failed.

Why a closing piece: C{Repr-Digest} is a header, sent before the body, but
the client computes the digest while it reads the file it sends (no second
pass). Holding back the last 64 KiB lets the client finish the digest before
the last request starts, so that request can carry it and the server refuses
a corrupted whole (section 4) instead of renaming it into place.

This module holds the loop and its bookkeeping only: which bytes to send
next and what an answer means are decided in L{uploadsvc.client.decisions}
(sans IO), a request goes through L{uploadsvc.client.exchange}, and the
value types are in L{uploadsvc.client.jobs}. The reactor (for time), the
HTTP client and the cooperator are passed in; nothing here uses the global
reactor.
"""

from __future__ import annotations

import os
import random
from typing import IO, Any, Iterable, Mapping

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator, deferLater

from uploadsvc.client.backoff import RetryPolicy, RetryState
from uploadsvc.client.decisions import (
    FINAL_PIECE,
    Answer,
    Completed,
    checkDigest,
    digestField,
    nextPiece,
    readDataAnswer,
    readQuery,
)
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable
from uploadsvc.client.exchange import HTTPExchange, IHTTPClient
from uploadsvc.client.http import ConfigError, checkSendable, splitCredentials
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.observer import IUploadObserver, NullObserver
from uploadsvc.client.producer import READ_SIZE, FileRangeProducer, RunningHash

#: The protocols the client speaks (C{--protocol}).
PROTOCOLS = ("put", "tus", "ietf")

__all__ = [
    "FINAL_PIECE",
    "IHTTPClient",
    "UploadJob",
    "UploadResult",
    "UploadSettings",
    "Uploader",
]


def _hasAuthorization(headers: Mapping[str, str]) -> bool:
    return any(name.lower() == "authorization" for name in headers)


@attrs.frozen
class UploadSettings:
    """
    What one file's upload needs of the uploader's configuration, taken
    when the upload starts.

    @ivar retry: the back-off and give-up policy.
    @ivar chunkSize: bytes per request below the closing piece, or L{None}.
    @ivar finalPiece: the size of the closing piece.
    @ivar readSize: bytes read from the file per cooperative step.
    @ivar authorizationConfigured: the configured headers hold an
        C{Authorization} (so credentials in the URL cannot also be sent).
    """

    retry: RetryPolicy = RetryPolicy()
    chunkSize: int | None = None
    finalPiece: int = FINAL_PIECE
    readSize: int = READ_SIZE
    authorizationConfigured: bool = False

    def __attrs_post_init__(self) -> None:
        if self.chunkSize is not None and self.chunkSize < 1:
            raise ValueError("chunkSize must be positive")
        if self.finalPiece < 1:
            raise ValueError("finalPiece must be positive")


class Uploader:
    """
    Uploads files to an uploadsvc server, resuming after every failure.

    @ivar retry: the back-off and give-up policy.
    @ivar chunkSize: bytes per request, or L{None} for one long request per
        attempt.
    @ivar stallTimeout: seconds without progress after which an attempt is
        abandoned (its connection aborted) and retried. Progress is a block
        of the file read for sending (which happens only while the socket
        takes data) or an answer arriving; once the last block is written
        the answer must come within this time, so it should exceed the time
        the link needs to drain a full socket send buffer.
    """

    def __init__(
        self,
        http: IHTTPClient,
        reactor: IReactorTime,
        cooperator: Cooperator,
        *,
        retry: RetryPolicy = RetryPolicy(),
        chunkSize: int | None = None,
        stallTimeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        observer: IUploadObserver | None = None,
        rng: random.Random | None = None,
        readSize: int = READ_SIZE,
        finalPiece: int = FINAL_PIECE,
        protocol: str = "put",
    ) -> None:
        """
        @param http: a L{treq.client.HTTPClient} (or anything with its
            C{request} method).
        @param reactor: the clock for timeouts and back-off (and the reactor
            handed to treq).
        @param cooperator: schedules file reads.
        @param headers: sent with every request, e.g. C{Authorization}.
        @param rng: randomness for the jitter (seeded in tests).
        @param protocol: C{"put"} (path URLs with C{Content-Range}),
            C{"tus"} (the URLs name the tus endpoint, then the destination)
            or C{"ietf"} (the resumable-upload draft: path URLs, or
            C{/.uploads/} then the destination).
        """
        self._http = http
        self._reactor = reactor
        self._cooperator = cooperator
        self.retry = retry
        self.chunkSize = chunkSize
        self.stallTimeout = stallTimeout
        self._headers = dict(headers or {})
        self._observer: IUploadObserver = observer or NullObserver()
        self._rng = rng or random.Random()
        self._readSize = readSize
        self._finalPiece = finalPiece
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        # Refuse bad settings now, not at the first upload.
        self.settings()

    def settings(self) -> UploadSettings:
        """
        The settings an upload started now gets.

        @raise ValueError: when L{chunkSize} is not positive.
        """
        return UploadSettings(
            retry=self.retry,
            chunkSize=self.chunkSize,
            finalPiece=self._finalPiece,
            readSize=self._readSize,
            authorizationConfigured=_hasAuthorization(self._headers),
        )

    def upload(self, job: UploadJob) -> Deferred[UploadResult]:
        """
        Upload one file.

        @return: a L{Deferred} that fires with the L{UploadResult}; it does
            not fail (the result says what went wrong).
        """
        kind = _FileUpload
        if self.protocol == "tus":
            from uploadsvc.client.tusupload import TusFileUpload

            kind = TusFileUpload
        elif self.protocol == "ietf":
            from uploadsvc.client.ietfupload import DraftFileUpload

            kind = DraftFileUpload
        upload = kind(
            job,
            self.settings(),
            HTTPExchange(self._http, self._reactor, self.stallTimeout, self._headers),
            clock=self._reactor,
            cooperator=self._cooperator,
            observer=self._observer,
            rng=self._rng,
        )
        return Deferred.fromCoroutine(upload.run())

    def uploadMany(self, jobs: Iterable[UploadJob], parallel: int = 4) -> Deferred[list[UploadResult]]:
        """
        Upload files, at most C{parallel} at a time, each resuming on its
        own.

        @return: a L{Deferred} firing with the results, in the order of
            C{jobs}.
        """
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        semaphore = DeferredSemaphore(parallel)
        return gatherResults(
            [semaphore.run(self.upload, job) for job in jobs], consumeErrors=True
        )


class _FileUpload:
    """
    The state of one file's upload: the open file, its running digest, the
    server's last acknowledged offset and the counts reported in the
    L{UploadResult}.
    """

    def __init__(
        self,
        job: UploadJob,
        settings: UploadSettings,
        exchange: HTTPExchange,
        *,
        clock: IReactorTime,
        cooperator: Cooperator,
        observer: IUploadObserver,
        rng: random.Random,
    ) -> None:
        """
        @param settings: the uploader's configuration for this upload.
        @param exchange: sends the requests (with the configured headers).
        @param clock: for the back-off and the elapsed time.
        @param cooperator: schedules file reads.
        @param observer: told of every event.
        @param rng: randomness for the jitter.
        """
        self._job = job
        self._settings = settings
        self._exchange = exchange
        self._clock = clock
        self._cooperator = cooperator
        self._observer = observer
        self._rng = rng
        self._hash = RunningHash()
        self._file: IO[bytes] | None = None
        self._size = -1
        self._acked = 0
        self._requests = 0
        self._resumes = 0
        self._startOffsets: list[int] = []
        self._bytesSent = 0
        self._alreadyComplete = False
        self._started = clock.seconds()
        self._url = job.url
        self._auth: dict[bytes, bytes] = {}

    def _result(self, ok: bool, error: str | None = None) -> UploadResult:
        return UploadResult(
            job=self._job,
            ok=ok,
            size=self._size,
            error=error,
            sha256=self._hash.digest().hex() if ok else None,
            requests=self._requests,
            resumes=self._resumes,
            startOffsets=tuple(self._startOffsets),
            bytesSent=self._bytesSent,
            elapsed=self._clock.seconds() - self._started,
            alreadyComplete=self._alreadyComplete,
        )

    def _prepareURL(self) -> None:
        """
        Move C{user:password@} from the job's URL to an C{Authorization:
        Basic} header, so that no request, message or retry line carries the
        password, and refuse a URL that no attempt could send to.

        @raise Fatal: when the URL or its credentials cannot be sent.
        """
        try:
            url, basic = splitCredentials(self._job.url)
            checkSendable(url)
        except ConfigError as e:
            raise Fatal(str(e)) from None
        if basic and self._settings.authorizationConfigured:
            raise Fatal("credentials in the URL and an Authorization header cannot both be sent")
        self._url = url
        self._auth = {k.encode("ascii"): v.encode("ascii") for k, v in basic.items()}

    def _sendsCredentials(self) -> bool:
        return bool(self._auth) or self._settings.authorizationConfigured

    async def run(self) -> UploadResult:
        observer = self._observer
        try:
            self._prepareURL()
        except Fatal as e:
            result = self._result(False, e.reason)
            observer.finished(result)
            return result
        try:
            self._file = open(self._job.path, "rb")
        except OSError as e:
            result = self._result(False, f"cannot read {self._job.path}: {e.strerror or e}")
            observer.finished(result)
            return result
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            observer.started(self._job, self._size)
            try:
                await self._loop()
            except Fatal as e:
                result = self._result(False, e.reason)
            except CancelledError:
                result = self._result(False, "cancelled")
            except Exception as e:  # a bug, reported rather than lost
                result = self._result(False, f"internal error: {e!r}")
            else:
                result = self._result(True)
        finally:
            self._file.close()
        observer.finished(result)
        return result

    def _checkUnchanged(self) -> None:
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size != self._size:
            raise Fatal("the file changed size during the upload")

    async def _loop(self) -> None:
        state = RetryState(self._settings.retry, self._clock.seconds())
        offset: int | None = None
        lastError = ""
        while True:
            try:
                if offset is None:
                    offset = await self._query()
                    if self._resumes:
                        self._observer.resumed(self._job, offset)
                self._checkUnchanged()
                if offset > self._acked:
                    state.progressed(self._clock.seconds())
                self._acked = max(self._acked, offset)
                newOffset = await self._send(offset)
                if newOffset is None:
                    return
                if newOffset > self._acked:
                    state.progressed(self._clock.seconds())
                    self._acked = newOffset
                offset = newOffset
            except OffsetConflict as e:
                # The server says where it is: go on from there at once, but
                # count it, so a server that keeps answering 409 without
                # moving is given up on.
                if e.offset <= self._acked and state.failed(self._clock.seconds(), self._rng) is None:
                    raise Fatal(f"gave up: the server keeps answering 409 at offset {e.offset}")
                offset = e.offset
            except Retryable as e:
                lastError = e.reason
                delay = state.failed(self._clock.seconds(), self._rng)
                if delay is None:
                    raise Fatal(
                        f"gave up after {state.failures} failed attempts"
                        f" without progress; last: {lastError}"
                    )
                if e.retryAfter is not None:
                    delay = max(delay, e.retryAfter)
                self._observer.retrying(self._job, e.reason, delay, state.failures)
                await deferLater(self._clock, delay)
                self._resumes += 1
                offset = None

    # -- the requests ------------------------------------------------------

    async def _query(self) -> int:
        """
        C{HEAD} the URL: how many bytes does the server hold?
        """
        answer = await self._exchange.request("HEAD", self._url, self._auth)
        held = readQuery(answer, self._size, self._sendsCredentials())
        if held.complete and self._requests == 0:
            self._alreadyComplete = True
        return held.offset

    async def _send(self, offset: int) -> int | None:
        """
        Send the next request from C{offset}.

        @return: the server's new offset, or L{None} when the upload is
            complete and verified.
        """
        assert self._file is not None
        piece = nextPiece(offset, self._size, self._settings.chunkSize, self._settings.finalPiece)
        if piece.total == 0:
            return await self._sendEmpty()
        if offset > self._hash.position:
            # The server holds bytes this run never read (an earlier run
            # sent them): hash them once, so the digest stays whole.
            await self._catchUp(offset)
        if piece.closing:
            # Finish the digest first, so that the request can carry it.
            await self._catchUp(self._size)
        extra: dict[bytes, bytes] = {}
        if self._hash.position == self._size:
            extra[b"Repr-Digest"] = digestField(self._hash.digest())
        contentRange = piece.contentRange()
        assert contentRange is not None
        extra[b"Content-Range"] = contentRange
        answer = await self._sendRange(piece.start, piece.length, extra)
        return await self._handle(answer, piece.start)

    def _catchUp(self, upTo: int) -> Deferred[None]:
        assert self._file is not None
        return self._hash.catchUp(self._file, upTo, self._cooperator, self._settings.readSize)

    async def _sendRange(
        self,
        start: int,
        length: int,
        extra: Mapping[bytes, bytes],
        method: str = "PUT",
        url: str | None = None,
    ) -> Answer:
        assert self._file is not None
        observer = self._observer
        listeners: list[Any] = []

        def onRead(offset: int, data: bytes) -> None:
            self._hash.feed(offset, data)
            for listener in listeners:
                listener()
            observer.progress(self._job, offset + len(data))

        producer = FileRangeProducer(
            self._file, start, length, self._cooperator, onRead, self._settings.readSize
        )
        self._requests += 1
        self._startOffsets.append(start)
        observer.progress(self._job, start)
        try:
            return await self._exchange.request(
                method, url or self._url, {**self._auth, **extra}, producer, listeners
            )
        finally:
            self._bytesSent += producer.written

    async def _sendEmpty(self) -> int | None:
        """
        A file of zero bytes cannot be described by a C{Content-Range}: send
        it as a plain C{PUT} (section 2), unless it is already there.
        """
        if self._alreadyComplete:
            # Two empty files are the same file.
            return None
        self._requests += 1
        self._startOffsets.append(0)
        answer = await self._exchange.request(
            "PUT", self._url, {**self._auth, b"Repr-Digest": digestField(self._hash.digest())}
        )
        return await self._handle(answer, 0)

    async def _handle(self, answer: Answer, start: int) -> int | None:
        """
        Read the answer to a data request that started at C{start}: the
        server's new offset, or L{None} once the completed upload's digest
        matched the file's.
        """
        outcome = readDataAnswer(answer, start, self._size, self._sendsCredentials())
        if not isinstance(outcome, Completed):
            return outcome
        await self._catchUp(self._size)
        self._checkUnchanged()
        checkDigest(outcome, self._hash.digest())
        return None
