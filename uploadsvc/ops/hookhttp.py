"""
HTTP hooks: POST the event document to a URL and read the answer, within
a time limit, with the shared secret in a header.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from uploadsvc.ops.hooks import MAX_ANSWER_BYTES, Decision, HookFailed, oneLine, parseHTTPAnswer

#: The request header that carries the secret of C{--hook-secret-file}.
SECRET_HEADER = b"Uploadsvc-Hook-Secret"


class _TooLong(Exception):
    pass


class _AnswerReader(Protocol):
    """
    Reads a hook's answer body (at most L{MAX_ANSWER_BYTES}) into C{done}.

    Cancelling C{done} (the time limit) closes the connection: an endpoint
    that sent its headers and then trickles its body would otherwise keep
    it open for as long as it likes (treq's C{collect} cannot be cancelled).
    """

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._close())

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > MAX_ANSWER_BYTES:
            self._close()
            self.done.errback(_TooLong())
            return
        self._pieces.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._pieces))
        else:
            self.done.errback(reason)


class HTTPHook:
    """
    POSTs hook events to one URL.

    @ivar url: where to.
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        client: Any,
        clock: IReactorTime,
        timeout: float,
        secret: Callable[[], bytes | None] | None = None,
    ) -> None:
        """
        @param client: a L{treq.client.HTTPClient} (or a
            L{treq.testing.StubTreq}) on the server's reactor.
        @param timeout: seconds for the whole exchange: connecting, sending,
            and reading the answer.
        @param secret: gives the current secret for L{SECRET_HEADER}; one
            that gives L{None} (its file unreadable) fails every call
            rather than calling without it.
        """
        self.url = url
        self.shown = shownURL(url)
        self._client = client
        self._clock = clock
        self._timeout = timeout
        self._secret = secret

    def call(self, hook: str, payload: bytes) -> Deferred[Decision]:
        """
        Send C{payload} for C{hook}; fire with the hook's decision.

        @return: fails with L{HookFailed} when there is none.
        """
        headers = {
            b"Content-Type": [b"application/json"],
            b"Uploadsvc-Hook": [hook.encode("ascii")],
        }
        if self._secret is not None:
            secret = self._secret()
            if secret is None:
                return _failed(HookFailed("no secret: the hook secret file holds none now"))
            headers[SECRET_HEADER] = [secret]

        async def exchange() -> Decision:
            response = await self._client.post(
                self.url, data=payload, headers=headers, allow_redirects=False
            )
            reader = _AnswerReader()
            response.deliverBody(reader)
            body = await reader.done
            return parseHTTPAnswer(hook, response.code, body)

        d = Deferred.fromCoroutine(exchange())
        # Not Deferred.addTimeout: the agent reports a cancelled request as
        # ResponseNeverReceived, which addTimeout does not recognise.
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        timer = self._clock.callLater(self._timeout, expire)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done)
        return d.addErrback(lambda f: self._explain(f, bool(expired)))

    def _explain(self, failure: Failure, expired: bool) -> Failure:
        """
        Any failure of the exchange as a L{HookFailed} with one line that
        says what went wrong (for the log, which names the hook's URL
        without its credentials; never the client's business).
        """
        if failure.check(HookFailed) and not expired:
            return failure
        if expired:
            reason = f"no answer within {self._timeout:g} s"
        elif failure.check(_TooLong):
            reason = f"answer longer than {MAX_ANSWER_BYTES} bytes"
        else:
            error = failure.value
            reason = f"{type(error).__name__}: {oneLine(str(error))}"
        return Failure(HookFailed(reason))


def shownURL(url: str) -> str:
    """
    C{url} as the log shows it: without a user name, password or query
    (any of which may carry a credential).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _failed(error: Exception) -> Deferred[Decision]:
    d: Deferred[Decision] = Deferred()
    d.errback(error)
    return d


def newClient(reactor: Any) -> Any:
    """
    A treq client on C{reactor} that opens a connection per call (a hook
    endpoint is called now and then; nothing is left open at shutdown).
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    return HTTPClient(Agent(reactor, pool=pool))
