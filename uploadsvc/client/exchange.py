"""
The client's HTTP plumbing: one request sent through treq and its answer
read whole into an L{Answer}, abandoned when nothing moves for the stall
timeout, its failures sorted by L{classifyFailure}.

This is the only client module that touches treq's request call, the
response protocol and the clock for stalls; what to send and what the
answer means is decided in L{uploadsvc.client.decisions}, the loop that
ties them together is L{uploadsvc.client.uploader}.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from uploadsvc.client.decisions import Answer
from uploadsvc.client.errors import Fatal, Retryable, classifyFailure
from uploadsvc.client.producer import FileRangeProducer

#: Answers longer than this are cut short (they are one-line reasons or a
#: small JSON document).
MAX_ANSWER = 64 * 1024


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


class _BodyCollector(TwistedProtocol):
    """
    Reads a (short) response body into memory.
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._size < MAX_ANSWER:
            self._chunks.append(data[: MAX_ANSWER - self._size])
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


def answerFrom(code: int, headers: Headers, body: bytes) -> Answer:
    """
    An L{Answer} of a response's status, headers (repeated ones joined with
    C{", "}) and body.
    """
    return Answer(
        code, {name: b", ".join(values) for name, values in headers.getAllRawHeaders()}, body
    )


class HTTPExchange:
    """
    Sends requests to one server through treq, with the configured headers
    and a stall timeout, and reads their answers whole.

    @ivar stallTimeout: seconds without progress after which a request is
        abandoned (see L{uploadsvc.client.uploader.Uploader}).
    """

    def __init__(
        self,
        http: IHTTPClient,
        clock: IReactorTime,
        stallTimeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param http: a L{treq.client.HTTPClient} (or anything with its
            C{request} method).
        @param clock: the clock for the stall timeout (also handed to treq
            as its reactor).
        @param headers: sent with every request, e.g. C{Authorization}.
        """
        self._http = http
        self._clock = clock
        self.stallTimeout = stallTimeout
        self._headers = dict(headers or {})

    def _requestHeaders(self, extra: Mapping[bytes, bytes]) -> Headers:
        headers = Headers()
        for name, value in self._headers.items():
            headers.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        for bname, bvalue in extra.items():
            headers.addRawHeader(bname, bvalue)
        return headers

    async def request(
        self,
        method: str,
        url: str,
        extra: Mapping[bytes, bytes],
        body: FileRangeProducer | None = None,
        activityHooks: list[Any] | None = None,
    ) -> Answer:
        """
        Send one request and read its answer, abandoning it when nothing
        moves for L{stallTimeout} seconds.

        @param extra: headers for this request, after the configured ones.
        @param activityHooks: the body's reader calls every function in this
            list on each block; the stall watchdog adds its own.

        @raise Retryable: for network failures and stalls.
        @raise Fatal: for a bad certificate.
        """
        watchdog = _Watchdog(self._clock, self.stallTimeout)
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
                reactor=self._clock,
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
            return answerFrom(response.code, response.headers, data)
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
