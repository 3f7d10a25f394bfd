"""
One file's upload, whatever the protocol: the open file, its running digest,
the counts of the L{UploadResult}, and the resume loop (ask where the server
is, send from there, wait and ask again after a failure).

A protocol's loop subclasses L{FileUpload} and overrides its extension
interface, three methods:
  - L{FileUpload.prepareTarget}: read what the protocol needs of the job's
    URL (credentials already moved out of it), refusing one it cannot use;
  - L{FileUpload.query}: where to go on from (the server's offset);
  - L{FileUpload.send}: the next request from an offset.
It sends through L{FileUpload.request}, L{FileUpload.sendRange} and
L{FileUpload.sendEmpty} (which keep the counts) and ends with
L{FileUpload.finish}. L{CreatedUpload} is the loop of the protocols whose
server names an upload at its creation (tus, the draft). What an answer
means stays sans IO: L{uploadsvc.client.decisions} (the path protocol),
L{uploadsvc.client.created} (what tus and the draft read alike),
L{uploadsvc.client.tus} and L{uploadsvc.client.ietf}.

The loops are L{uploadsvc.client.putupload}, L{uploadsvc.client.tusupload}
and L{uploadsvc.client.ietfupload}; L{uploadsvc.client.uploader} picks one
by protocol. None of them imports another.
"""

from __future__ import annotations

import os
import random
from typing import IO, Any, Mapping

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator, deferLater

from uploadsvc.client.backoff import RetryPolicy, RetryState
from uploadsvc.client.created import readCreated, readResourceOffset
from uploadsvc.client.decisions import (
    FINAL_PIECE,
    Answer,
    Completed,
    Piece,
    checkDigest,
)
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable
from uploadsvc.client.exchange import HTTPExchange
from uploadsvc.client.http import ConfigError, checkSendable, splitCredentials
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.observer import IUploadObserver
from uploadsvc.client.producer import READ_SIZE, FileRangeProducer, RunningHash


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


class FileUpload:
    """
    The state of one file's upload and its resume loop; a protocol's loop
    overrides L{prepareTarget}, L{query} and L{send}.

    @ivar url: the job's URL without credentials (set by L{run}).
    @ivar size: the file's size (set by L{run} once the file is open).
    @ivar settings: the uploader's configuration for this upload.
    @ivar alreadyComplete: the server had the complete file before any
        request of this upload sent a byte of it.
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
        self.settings = settings
        self._exchange = exchange
        self._clock = clock
        self._cooperator = cooperator
        self._observer = observer
        self._rng = rng
        self._hash = RunningHash()
        self._file: IO[bytes] | None = None
        self.size = -1
        self._acked = 0
        self._requests = 0
        self._resumes = 0
        self._startOffsets: list[int] = []
        self._bytesSent = 0
        self.alreadyComplete = False
        self._started = clock.seconds()
        self.url = job.url
        self._auth: dict[bytes, bytes] = {}

    # -- the extension interface: what a protocol's loop overrides ------------

    def prepareTarget(self) -> None:
        """
        Read what the protocol needs of L{url}, before any request.

        @raise Fatal: when the protocol cannot use the URL.
        """

    async def query(self) -> int:
        """
        Ask the server where to go on from (first, and after each failure).

        @return: the offset from which L{send} is called.
        @raise Retryable: for an answer or a failure worth another attempt.
        @raise Fatal: when the upload cannot go on.
        """
        raise NotImplementedError()

    async def send(self, offset: int) -> int | None:
        """
        Send the next request from C{offset}.

        @return: the server's new offset, or L{None} when the upload is
            complete (and checked, where the protocol can).
        @raise OffsetConflict: the server says it is elsewhere.
        @raise Retryable: for an answer or a failure worth another attempt.
        @raise Fatal: when the upload cannot go on.
        """
        raise NotImplementedError()

    # -- what the loops send through ------------------------------------------

    def sendsCredentials(self) -> bool:
        """
        Whether the requests carry an C{Authorization} (which a C{401}'s
        message says).
        """
        return bool(self._auth) or self.settings.authorizationConfigured

    def digest(self) -> bytes:
        """
        The sha-256 of the file's bytes read so far (the whole file's once
        L{catchUp} reached L{size}).
        """
        return self._hash.digest()

    def request(
        self, method: str, url: str, headers: Mapping[bytes, bytes] = {}, *, counted: bool = False
    ) -> Deferred[Answer]:
        """
        A request without a body, with the URL's credentials.

        @param counted: it is counted among the result's requests (a
            creation), unlike a status query.
        """
        if counted:
            self._requests += 1
        return Deferred.fromCoroutine(self._exchange.request(method, url, {**self._auth, **headers}))

    def sendEmpty(self, method: str, url: str, headers: Mapping[bytes, bytes]) -> Deferred[Answer]:
        """
        The one data request of an empty file, counted with its start at 0.
        """
        self._startOffsets.append(0)
        return self.request(method, url, headers, counted=True)

    async def sendRange(
        self,
        start: int,
        length: int,
        headers: Mapping[bytes, bytes],
        method: str,
        url: str,
    ) -> Answer:
        """
        A request whose body is the file's bytes C{[start, start + length)},
        read (and hashed, and reported as progress) as the socket takes
        them.
        """
        assert self._file is not None
        observer = self._observer
        listeners: list[Any] = []

        def onRead(offset: int, data: bytes) -> None:
            self._hash.feed(offset, data)
            for listener in listeners:
                listener()
            observer.progress(self._job, offset + len(data))

        producer = FileRangeProducer(
            self._file, start, length, self._cooperator, onRead, self.settings.readSize
        )
        self._requests += 1
        self._startOffsets.append(start)
        observer.progress(self._job, start)
        try:
            return await self._exchange.request(
                method, url, {**self._auth, **headers}, producer, listeners
            )
        finally:
            self._bytesSent += producer.written

    def catchUp(self, upTo: int) -> Deferred[None]:
        """
        Hash the file up to C{upTo} without sending it (bytes the server
        got from an earlier run, or the rest before a closing piece).
        """
        assert self._file is not None
        return self._hash.catchUp(self._file, upTo, self._cooperator, self.settings.readSize)

    def checkUnchanged(self) -> None:
        """
        @raise Fatal: the file changed size since the upload started.
        """
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size != self.size:
            raise Fatal("the file changed size during the upload")

    async def finish(self, completed: Completed | None) -> None:
        """
        The server holds the whole file: finish the digest, check that the
        file did not change, and check the digest the server completed the
        upload with (C{completed}; L{None} where the protocol has none).
        """
        await self.catchUp(self.size)
        self.checkUnchanged()
        if completed is not None:
            checkDigest(completed, self._hash.digest())

    def markAlreadyComplete(self) -> None:
        """
        Report the file as found complete on the server (when no request
        sent any of it).
        """
        if self._requests == 0:
            self.alreadyComplete = True

    @property
    def hashedUpTo(self) -> int:
        """
        How many leading bytes of the file L{digest} covers.
        """
        return self._hash.position

    # -- the loop ---------------------------------------------------------------

    def _result(self, ok: bool, error: str | None = None) -> UploadResult:
        return UploadResult(
            job=self._job,
            ok=ok,
            size=self.size,
            error=error,
            sha256=self._hash.digest().hex() if ok else None,
            requests=self._requests,
            resumes=self._resumes,
            startOffsets=tuple(self._startOffsets),
            bytesSent=self._bytesSent,
            elapsed=self._clock.seconds() - self._started,
            alreadyComplete=self.alreadyComplete,
        )

    def _prepareURL(self) -> None:
        """
        Move C{user:password@} from the job's URL to an C{Authorization:
        Basic} header, so that no request, message or retry line carries the
        password, and refuse a URL that no attempt could send to; then let
        the protocol read the URL.

        @raise Fatal: when the URL or its credentials cannot be sent.
        """
        try:
            url, basic = splitCredentials(self._job.url)
            checkSendable(url)
        except ConfigError as e:
            raise Fatal(str(e)) from None
        if basic and self.settings.authorizationConfigured:
            raise Fatal("credentials in the URL and an Authorization header cannot both be sent")
        self.url = url
        self._auth = {k.encode("ascii"): v.encode("ascii") for k, v in basic.items()}
        self.prepareTarget()

    async def run(self) -> UploadResult:
        """
        Upload the file, resuming after every failure.

        @return: the result; it says what went wrong (this does not fail).
        """
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
            self.size = os.fstat(self._file.fileno()).st_size
            observer.started(self._job, self.size)
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

    async def _loop(self) -> None:
        state = RetryState(self.settings.retry, self._clock.seconds())
        offset: int | None = None
        lastError = ""
        while True:
            try:
                if offset is None:
                    offset = await self.query()
                    if self._resumes:
                        self._observer.resumed(self._job, offset)
                self.checkUnchanged()
                if offset > self._acked:
                    state.progressed(self._clock.seconds())
                self._acked = max(self._acked, offset)
                newOffset = await self.send(offset)
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


class CreatedUpload(FileUpload):
    """
    The loop of the protocols whose server names an upload at its creation
    (tus, the draft): the first L{query} creates it (C{POST}) and keeps its
    URL; after a failure, C{HEAD} on that URL gives the offset, and an
    upload gone is created again; bytes go in C{PATCH}es from the offset.

    Besides L{prepareTarget}, a protocol gives L{protocolHeaders} and
    overrides L{creation}, L{nextPiece}, L{appendHeaders} and L{readAppend}
    (and L{whenGone} where an upload gone may have completed).

    @ivar uploadURL: the upload's URL once created.
    @ivar sentClosing: a closing piece (one that completes the upload) was
        sent.
    """

    #: What every request of the protocol carries.
    protocolHeaders: Mapping[bytes, bytes] = {}
    uploadURL: str | None = None
    sentClosing = False

    def creation(self) -> tuple[str, Mapping[bytes, bytes]]:
        """
        The URL and headers of the creation (a C{POST} without a body).
        """
        raise NotImplementedError()

    def nextPiece(self, offset: int) -> Piece:
        """
        The bytes the next C{PATCH} from C{offset} carries.
        """
        raise NotImplementedError()

    def appendHeaders(self, piece: Piece, digest: bytes | None) -> Mapping[bytes, bytes]:
        """
        The headers of the C{PATCH} of C{piece}.

        @param digest: the whole file's sha-256, for a closing piece.
        """
        raise NotImplementedError()

    def readAppend(self, answer: Answer, start: int) -> int | Completed:
        """
        What the answer to a C{PATCH} from C{start} means: the server's new
        offset, or L{Completed}.
        """
        raise NotImplementedError()

    async def whenGone(self) -> int | None:
        """
        The upload's URL says it is gone: the offset to go on from without
        creating it again, or L{None} to create it again.
        """
        return None

    async def query(self) -> int:
        """
        The upload's offset (C{HEAD}), or 0 after creating it (the first
        time, or when the server no longer has it).
        """
        if self.uploadURL is not None:
            answer = await self.request("HEAD", self.uploadURL, self.protocolHeaders)
            offset = readResourceOffset(answer, self.size, self.sendsCredentials())
            if offset is None:
                offset = await self.whenGone()
            if offset is not None:
                return offset
        url, headers = self.creation()
        answer = await self.request("POST", url, headers, counted=True)
        self.uploadURL = readCreated(answer, url, self.size, self.sendsCredentials())
        return 0

    async def send(self, offset: int) -> int | None:
        """
        C{PATCH} the next piece from C{offset}; L{None} once the server
        completed the upload (its digest checked when it gave one).
        """
        piece = self.nextPiece(offset)
        if offset > self.hashedUpTo:
            await self.catchUp(offset)
        digest = None
        if piece.closing:
            # Finish the digest first, so that the request can carry it.
            await self.catchUp(self.size)
            digest = self.digest()
            self.sentClosing = True
        assert self.uploadURL is not None
        answer = await self.sendRange(
            piece.start, piece.length, self.appendHeaders(piece, digest), "PATCH", self.uploadURL
        )
        outcome = self.readAppend(answer, piece.start)
        if isinstance(outcome, Completed):
            await self.finish(outcome)
            return None
        return outcome
