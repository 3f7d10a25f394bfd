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

The reactor (for time), the HTTP client and the cooperator are passed in;
nothing here uses the global reactor.
"""

from __future__ import annotations

import base64
import os
import random
import re
from typing import IO, Any, Iterable, Mapping, Protocol, cast

import attrs
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    gatherResults,
)
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import Cooperator, deferLater
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from uploadsvc.client.backoff import RetryPolicy, RetryState
from uploadsvc.client.errors import Fatal, OffsetConflict, Retryable, classifyFailure
from uploadsvc.client.http import ConfigError, checkSendable, splitCredentials
from uploadsvc.client.observer import IUploadObserver, NullObserver
from uploadsvc.client.producer import READ_SIZE, FileRangeProducer, RunningHash
from uploadsvc.protocol.digests import formatDigest, parseDigestHeader
from uploadsvc.protocol.ranges import ContentRange

#: The size of the closing piece that carries C{Repr-Digest}.
FINAL_PIECE = 64 * 1024

#: Answers longer than this are cut short (they are one-line reasons or a
#: small JSON document).
_MAX_ANSWER = 64 * 1024

#: The longest C{Retry-After} honoured, in seconds.
_MAX_RETRY_AFTER = 600.0

#: The title of an HTML error page (nginx sends those), used as its reason.
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class IHTTPClient(Protocol):
    """
    The part of L{treq.client.HTTPClient} the uploader uses.
    """

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers | None = None,
        data: Any = None,
        allow_redirects: bool = True,
        unbuffered: bool = False,
        reactor: Any = None,
    ) -> Deferred[Any]:
        ...


@attrs.frozen
class UploadJob:
    """
    One file to upload.

    @ivar path: the local file.
    @ivar url: the destination URL (already percent-encoded); a
        C{user:password@} in it is sent as HTTP Basic, never in the URL.
    @ivar name: what to call it in messages (by default the path).
    """

    path: str
    url: str
    name: str = ""

    @property
    def label(self) -> str:
        """
        The name shown to users.
        """
        return self.name or self.path


@attrs.frozen
class UploadResult:
    """
    How one file's upload ended.

    @ivar ok: whether the file is at the server, complete and verified.
    @ivar size: the file size (-1 when it could not be read).
    @ivar error: why it failed, one line, or L{None}.
    @ivar sha256: the hex sha-256 of the file when known.
    @ivar requests: data-carrying requests sent.
    @ivar resumes: times the upload went on after a failed attempt.
    @ivar startOffsets: the first byte of every data-carrying request, in
        order: after the first, a C{0} would mean a restart from zero.
    @ivar bytesSent: body bytes handed to the network, resends included.
    @ivar elapsed: seconds from start to end.
    @ivar alreadyComplete: the server held the complete file before this
        upload sent any of it.
    """

    job: UploadJob
    ok: bool
    size: int
    error: str | None = None
    sha256: str | None = None
    requests: int = 0
    resumes: int = 0
    startOffsets: tuple[int, ...] = ()
    bytesSent: int = 0
    elapsed: float = 0.0
    alreadyComplete: bool = False


@attrs.frozen
class _Answer:
    """
    A response, read whole.
    """

    code: int
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.getRawHeaders(name)
        return b", ".join(values) if values else None

    def intHeader(self, name: bytes) -> int | None:
        value = self.header(name)
        if value is None:
            return None
        if not value.strip().isdigit():
            raise Retryable(f"server sent a malformed {name.decode()} header")
        return int(value)

    def detail(self) -> str:
        """
        The server's reason: the first line of a text body, the title of an
        HTML page (as nginx sends), or nothing.
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
        detail = self.detail()
        return f"HTTP {self.code}" + (f": {detail}" if detail else "")


class _BodyCollector(TwistedProtocol):
    """
    Reads a (short) response body into memory.
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._size < _MAX_ANSWER:
            self._chunks.append(data[: _MAX_ANSWER - self._size])
            self._size += len(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)

    def abort(self) -> None:
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()


class _Watchdog:
    """
    Cancels what is in progress when nothing happened for C{timeout}
    seconds: no byte read for the body, no answer.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout
        self._last = clock.seconds()
        self._call: Any = None
        self.fired = False
        self.current: Deferred[Any] | None = None

    def start(self) -> None:
        self._last = self._clock.seconds()
        self._call = self._clock.callLater(self._timeout, self._check)

    def touch(self) -> None:
        self._last = self._clock.seconds()

    def _check(self) -> None:
        idle = self._clock.seconds() - self._last
        if idle < self._timeout:
            self._call = self._clock.callLater(self._timeout - idle, self._check)
            return
        self._call = None
        self.fired = True
        if self.current is not None:
            # Also when it has "fired" with another Deferred it waits on
            # (treq's chain does that): cancel() forwards to that one.
            self.current.cancel()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


def _retryAfter(answer: _Answer) -> float | None:
    value = answer.header(b"Retry-After")
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value), _MAX_RETRY_AFTER)


def _digestHeader(digest: bytes) -> bytes:
    return formatDigest("sha-256", digest)


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
    ) -> None:
        """
        @param http: a L{treq.client.HTTPClient} (or anything with its
            C{request} method).
        @param reactor: the clock for timeouts and back-off (and the reactor
            handed to treq).
        @param cooperator: schedules file reads.
        @param headers: sent with every request, e.g. C{Authorization}.
        @param rng: randomness for the jitter (seeded in tests).
        """
        if chunkSize is not None and chunkSize < 1:
            raise ValueError("chunkSize must be positive")
        if finalPiece < 1:
            raise ValueError("finalPiece must be positive")
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

    def upload(self, job: UploadJob) -> Deferred[UploadResult]:
        """
        Upload one file.

        @return: a L{Deferred} that fires with the L{UploadResult}; it does
            not fail (the result says what went wrong).
        """
        return Deferred.fromCoroutine(_FileUpload(self, job).run())

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

    # -- one request -------------------------------------------------------

    def _requestHeaders(self, extra: Mapping[bytes, bytes]) -> Headers:
        headers = Headers()
        for name, value in self._headers.items():
            headers.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        for bname, bvalue in extra.items():
            headers.addRawHeader(bname, bvalue)
        return headers

    async def _request(
        self,
        method: str,
        url: str,
        extra: Mapping[bytes, bytes],
        body: FileRangeProducer | None = None,
        activityHooks: list[Any] | None = None,
    ) -> _Answer:
        """
        Send one request and read its answer, abandoning it when nothing
        moves for L{stallTimeout} seconds.

        @param activityHooks: the body's reader calls every function in this
            list on each block; the stall watchdog adds its own.

        @raise Retryable: for network failures and stalls.
        @raise Fatal: for a bad certificate.
        """
        watchdog = _Watchdog(self._reactor, self.stallTimeout)
        if activityHooks is not None:
            activityHooks.append(watchdog.touch)
        watchdog.start()
        try:
            d = self._http.request(
                method,
                url,
                headers=self._requestHeaders(extra),
                data=body,
                allow_redirects=False,
                unbuffered=True,
                reactor=self._reactor,
            )
            watchdog.current = d
            try:
                response = await d
            finally:
                if body is not None:
                    # An early answer (e.g. a 409 sent before the body was
                    # read): stop reading the file.
                    body.stopProducing()
            watchdog.touch()
            collected: Deferred[bytes] = Deferred(lambda _: collector.abort())
            collector = _BodyCollector(collected)
            watchdog.current = collected
            response.deliverBody(collector)
            data = await collected
            return _Answer(response.code, response.headers, data)
        except (Retryable, Fatal):
            raise
        except CancelledError:
            if watchdog.fired:
                raise Retryable(f"stalled: no progress for {self.stallTimeout:g} s") from None
            raise
        except Exception:
            if watchdog.fired:
                raise Retryable(f"stalled: no progress for {self.stallTimeout:g} s") from None
            raise classifyFailure(Failure(), url) from None
        finally:
            watchdog.stop()


class _FileUpload:
    """
    The state of one file's upload.
    """

    def __init__(self, uploader: Uploader, job: UploadJob) -> None:
        self._u = uploader
        self._job = job
        self._clock = uploader._reactor
        self._hash = RunningHash()
        self._file: IO[bytes] | None = None
        self._size = -1
        self._acked = 0
        self._requests = 0
        self._resumes = 0
        self._startOffsets: list[int] = []
        self._bytesSent = 0
        self._alreadyComplete = False
        self._started = self._clock.seconds()
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
        if basic and any(name.lower() == "authorization" for name in self._u._headers):
            raise Fatal("credentials in the URL and an Authorization header cannot both be sent")
        self._url = url
        self._auth = {k.encode("ascii"): v.encode("ascii") for k, v in basic.items()}

    def _sendsCredentials(self) -> bool:
        return bool(self._auth) or any(name.lower() == "authorization" for name in self._u._headers)

    async def run(self) -> UploadResult:
        observer = self._u._observer
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
        state = RetryState(self._u.retry, self._clock.seconds())
        offset: int | None = None
        lastError = ""
        while True:
            try:
                if offset is None:
                    offset = await self._query()
                    if self._resumes:
                        self._u._observer.resumed(self._job, offset)
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
                if e.offset <= self._acked and state.failed(
                    self._clock.seconds(), self._u._rng
                ) is None:
                    raise Fatal(f"gave up: the server keeps answering 409 at offset {e.offset}")
                offset = e.offset
            except Retryable as e:
                lastError = e.reason
                delay = state.failed(self._clock.seconds(), self._u._rng)
                if delay is None:
                    raise Fatal(
                        f"gave up after {state.failures} failed attempts"
                        f" without progress; last: {lastError}"
                    )
                if e.retryAfter is not None:
                    delay = max(delay, e.retryAfter)
                self._u._observer.retrying(self._job, e.reason, delay, state.failures)
                await deferLater(self._clock, delay)
                self._resumes += 1
                offset = None

    # -- the requests ------------------------------------------------------

    async def _query(self) -> int:
        """
        C{HEAD} the URL: how many bytes does the server hold?
        """
        answer = await self._u._request("HEAD", self._url, self._auth)
        if answer.code == 404:
            return 0
        if answer.code == 204:
            offset = answer.intHeader(b"Upload-Offset")
            if offset is None:
                raise Fatal("the server did not report an Upload-Offset")
            total = answer.intHeader(b"Upload-Length")
            if total is not None and total != self._size:
                raise Fatal(
                    f"the server holds an incomplete upload of {total} bytes"
                    f" at this URL; the file has {self._size}"
                )
            if offset > self._size:
                raise Fatal(f"the server holds {offset} bytes; the file has {self._size}")
            return offset
        if answer.code == 200:
            size = answer.intHeader(b"Upload-Offset")
            if size is None:
                size = answer.intHeader(b"Content-Length")
            if size != self._size:
                raise Fatal(
                    f"a different file ({size} bytes) already exists at this URL;"
                    f" the file has {self._size}"
                )
            if self._requests == 0:
                self._alreadyComplete = True
            return self._size
        self._refused(answer)
        raise AssertionError("unreachable")

    def _refused(self, answer: _Answer) -> None:
        """
        Raise for an answer that is neither success nor a C{409} with an
        offset.
        """
        if answer.code in (408, 429) or 500 <= answer.code <= 599:
            raise Retryable(answer.reason(), _retryAfter(answer))
        if answer.code == 401:
            # Never retried: the same credentials get the same answer.
            detail = answer.detail()
            what = (
                "the server refused the credentials"
                if self._sendsCredentials()
                else "the server asks for credentials (none were sent)"
            )
            raise Fatal(f"HTTP 401: {what}" + (f" ({detail})" if detail else ""))
        if answer.code == 403:
            raise Fatal(f"HTTP 403: {answer.detail() or 'forbidden'}")
        if answer.code == 409:
            recorded = answer.intHeader(b"Upload-Length")
            if recorded is not None and recorded != self._size:
                raise Fatal(
                    f"the server recorded a total of {recorded} bytes for this URL;"
                    f" the file has {self._size} ({answer.reason()})"
                )
        raise Fatal(answer.reason())

    async def _send(self, offset: int) -> int | None:
        """
        Send the next request from C{offset}.

        @return: the server's new offset, or L{None} when the upload is
            complete and verified.
        """
        assert self._file is not None
        size = self._size
        if size == 0:
            return await self._sendEmpty()
        finalStart = max(0, size - self._u._finalPiece)
        if offset > self._hash.position:
            # The server holds bytes this run never read (an earlier run
            # sent them): hash them once, so the digest stays whole.
            await self._hash.catchUp(self._file, offset, self._u._cooperator, self._u._readSize)
        extra: dict[bytes, bytes] = {}
        if offset < finalStart:
            end = finalStart
            if self._u.chunkSize is not None:
                end = min(offset + self._u.chunkSize, finalStart)
            start = offset
        else:
            # The closing piece: finish the digest first, so that the
            # request can carry it.
            await self._hash.catchUp(self._file, size, self._u._cooperator, self._u._readSize)
            start = offset if offset < size else finalStart
            end = size
        if self._hash.position == size:
            extra[b"Repr-Digest"] = _digestHeader(self._hash.digest())
        extra[b"Content-Range"] = ContentRange(start, end - 1, size).toHeader()
        answer = await self._sendRange(start, end - start, extra)
        return await self._handle(answer, start)

    async def _sendRange(self, start: int, length: int, extra: Mapping[bytes, bytes]) -> _Answer:
        assert self._file is not None
        observer = self._u._observer
        listeners: list[Any] = []

        def onRead(offset: int, data: bytes) -> None:
            self._hash.feed(offset, data)
            for listener in listeners:
                listener()
            observer.progress(self._job, offset + len(data))

        producer = FileRangeProducer(
            self._file, start, length, self._u._cooperator, onRead, self._u._readSize
        )
        self._requests += 1
        self._startOffsets.append(start)
        observer.progress(self._job, start)
        try:
            return await self._u._request(
                "PUT", self._url, {**self._auth, **extra}, producer, listeners
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
        answer = await self._u._request(
            "PUT", self._url, {**self._auth, b"Repr-Digest": _digestHeader(self._hash.digest())}
        )
        return await self._handle(answer, 0)

    async def _handle(self, answer: _Answer, start: int) -> int | None:
        """
        Read the answer to a data request that started at C{start}.

        A C{409} whose C{Upload-Offset} is below C{start} is an offset
        conflict: go on from the server's offset. Any other C{409} (the
        file exists with other content, a different total) is final.
        """
        if answer.code in (200, 201):
            await self._verify(answer)
            return None
        if answer.code == 204:
            offset = answer.intHeader(b"Upload-Offset")
            if offset is None:
                raise Retryable("the server did not report an Upload-Offset")
            return offset
        if answer.code == 409:
            offset = answer.intHeader(b"Upload-Offset")
            if offset is not None and offset < start:
                raise OffsetConflict(offset)
        self._refused(answer)
        raise AssertionError("unreachable")

    async def _verify(self, answer: _Answer) -> None:
        """
        Check a completion answer against the file: size and sha-256.
        """
        assert self._file is not None
        size = answer.intHeader(b"Upload-Offset")
        if size is not None and size != self._size:
            raise Fatal(f"the server completed the upload at {size} bytes; the file has {self._size}")
        await self._hash.catchUp(self._file, self._size, self._u._cooperator, self._u._readSize)
        self._checkUnchanged()
        field = answer.header(b"Repr-Digest")
        if field is None:
            raise Fatal("the server did not send a Repr-Digest for the completed file")
        try:
            theirs = parseDigestHeader(field).get("sha-256")
        except Exception:
            raise Fatal("the server sent a malformed Repr-Digest") from None
        if theirs is None:
            raise Fatal("the server's Repr-Digest has no sha-256")
        ours = self._hash.digest()
        if theirs != ours:
            raise Fatal(
                "the stored file differs: server sha-256 "
                f"{base64.b64encode(theirs).decode()}, local {base64.b64encode(ours).decode()}"
            )
