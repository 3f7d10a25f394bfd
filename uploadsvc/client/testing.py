"""
Test doubles for code that uses the client (like L{treq.testing}): a
deterministic L{Simulation} (a fake clock and a cooperator driven step by
step) and L{FakeServer}, a scripted in-memory uploadsvc plugged in as treq's
L{IAgent}, so the real treq L{HTTPClient} code runs and no socket is opened.
Faults (L{Refuse}, L{CutAfter}, L{StallAfter}, L{Answer}, L{WrongDigest})
are scripted per request.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock, Cooperator
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer


class _Work:
    def __init__(self, f: Callable[[], object]) -> None:
        self.f = f
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Simulation:
    """
    A L{Clock}, and a L{Cooperator} whose steps run only when L{run} says:
    pending work runs first, then time jumps to the next delayed call.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self._work: list[_Work] = []
        self.cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=self._schedule,  # type: ignore[arg-type]
        )

    def _schedule(self, f: Callable[[], object]) -> _Work:
        work = _Work(f)
        self._work.append(work)
        return work

    def soon(self, f: Callable[..., object], *args: Any) -> None:
        """
        Run C{f(*args)} at the next step, at the current time.
        """
        self._work.append(_Work(lambda: f(*args)))

    def step(self, count: int = 1) -> None:
        """
        Run at most C{count} pieces of pending work, without moving time.
        """
        for _ in range(count):
            if not self._work:
                return
            work = self._work.pop(0)
            if not work.cancelled:
                work.f()

    def run(self, d: Deferred[Any], limit: int = 500_000) -> Any:
        """
        Step until C{d} has fired (at most C{limit} steps) and return its
        result; raise when it failed or never fires.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        for _ in range(limit):
            if results:
                break
            if self._work:
                work = self._work.pop(0)
                if not work.cancelled:
                    work.f()
            elif self.clock.getDelayedCalls():
                nextTime = min(c.getTime() for c in self.clock.getDelayedCalls())
                self.clock.advance(max(0.0, nextTime - self.clock.seconds()))
            else:
                break
        if not results:
            raise AssertionError("the Deferred did not fire")
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result


@implementer(IResponse)
class FakeResponse:
    """
    A complete answer, delivered at once.
    """

    version = (b"HTTP", 1, 1)
    previousResponse = None
    request = None

    def __init__(self, code: int, headers: dict[bytes, bytes], body: bytes = b"") -> None:
        self.code = code
        self.phrase = b"Fake"
        self.headers = Headers({k: [v] for k, v in headers.items()})
        self.length = len(body)
        self._body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(None)
        if self._body:
            protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: Any) -> None:
        pass


# -- faults: what the scripted server does to one request ---------------------


@attrs.frozen
class Refuse:
    """
    The connection is refused.
    """


@attrs.frozen
class CutAfter:
    """
    The connection drops after the server read C{n} body bytes (those are
    kept). With C{n} at or beyond the body length the request is processed
    whole and its answer is lost.
    """

    n: int


@attrs.frozen
class StallAfter:
    """
    After C{n} body bytes the link goes dead: nothing more is read, nothing
    is answered, until the client gives up.
    """

    n: int


@attrs.frozen
class Answer:
    """
    Answer this at once, without reading the body or touching the state.
    """

    code: int
    headers: dict[bytes, bytes] = attrs.field(factory=dict)
    body: bytes = b""


@attrs.frozen
class WrongDigest:
    """
    Process the request normally, but answer a wrong C{Repr-Digest} on
    completion.
    """


@attrs.define
class StoredUpload:
    """
    What the fake server holds for one path.
    """

    data: bytearray = attrs.field(factory=bytearray)
    total: int | None = None
    complete: bool = False


@attrs.define
class RequestRecord:
    """
    A request as the fake server saw it.
    """

    method: bytes
    path: str
    headers: Headers
    time: float
    bodyLength: int | None
    received: int = 0
    uri: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class _Consumer:
    def __init__(self, onWrite: Callable[[bytes], None]) -> None:
        self._onWrite = onWrite
        self.producer: Any = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self._onWrite(data)


def b64digest(data: bytes) -> bytes:
    """
    The C{sha-256=:...:} field member for C{data}.
    """
    return b"sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()) + b":"


@implementer(IAgent)
class FakeServer:
    """
    An in-memory uploadsvc (docs/protocol.md sections 2-4, no overwrite) with
    scripted faults.

    @ivar uploads: path -> L{StoredUpload}.
    @ivar log: every request, in order.
    @ivar faults: request index -> fault (see L{Refuse}, L{CutAfter}, ...);
        or set L{faultFor} for a rule.
    @ivar maxActive: the most data requests in progress at once.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.uploads: dict[str, StoredUpload] = {}
        self.log: list[RequestRecord] = []
        self.faults: dict[int, object] = {}
        self.faultFor: Callable[[int, RequestRecord], object] | None = None
        self.active = 0
        self.maxActive = 0

    def dataRequests(self) -> list[RequestRecord]:
        """
        The requests that carried a body.
        """
        return [r for r in self.log if r.method == b"PUT"]

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: Any = None,
    ) -> Deferred[Any]:
        # Like Twisted's Agent with a connection pool, the Deferred handed
        # out has already "fired" with the one that waits for the answer, so
        # cancelling has to go through the chain.
        inner = self._request(method, uri, headers, bodyProducer)
        outer: Deferred[Any] = succeed(None)
        outer.addCallback(lambda _: inner)
        return outer

    def _request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None,
        bodyProducer: Any,
    ) -> Deferred[Any]:
        path = urlsplit(uri.decode("ascii")).path
        record = RequestRecord(
            method,
            path,
            headers or Headers(),
            self.sim.clock.seconds(),
            None if bodyProducer is None else bodyProducer.length,
            uri=uri,
        )
        index = len(self.log)
        self.log.append(record)
        fault = self.faults.get(index)
        if fault is None and self.faultFor is not None:
            fault = self.faultFor(index, record)
        if isinstance(fault, Refuse):
            return fail(ConnectionRefusedError())
        if isinstance(fault, Answer):
            if bodyProducer is not None:
                self.sim.soon(bodyProducer.stopProducing)
            d: Deferred[Any] = Deferred()
            self.sim.soon(d.callback, FakeResponse(fault.code, fault.headers, fault.body))
            return d
        upload = self.uploads.get(path)
        if method == b"HEAD":
            return self._answerLater(self._head(upload))
        if method != b"PUT":
            return self._answerLater(FakeResponse(405, {}))
        return self._put(path, record, bodyProducer, fault)

    def _answerLater(self, response: FakeResponse) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.sim.soon(d.callback, response)
        return d

    def _head(self, upload: StoredUpload | None) -> FakeResponse:
        if upload is None:
            return FakeResponse(404, {})
        n = len(upload.data)
        if upload.complete:
            return FakeResponse(
                200, {b"Upload-Offset": b"%d" % n, b"Content-Length": b"%d" % n, b"Upload-Complete": b"?1"}
            )
        headers = {b"Upload-Offset": b"%d" % n, b"Upload-Complete": b"?0"}
        if upload.total is not None:
            headers[b"Upload-Length"] = b"%d" % upload.total
        return FakeResponse(204, headers)

    def _completed(self, path: str, upload: StoredUpload, code: int, wrong: bool) -> FakeResponse:
        data = bytes(upload.data)
        digest = b64digest(b"wrong" + data) if wrong else b64digest(data)
        return FakeResponse(
            code,
            {
                b"Upload-Offset": b"%d" % len(data),
                b"Upload-Complete": b"?1",
                b"Repr-Digest": digest,
                b"Location": path.encode(),
            },
            b'{"path": "x"}',
        )

    def _put(self, path: str, record: RequestRecord, producer: Any, fault: object) -> Deferred[Any]:
        upload = self.uploads.get(path)
        contentRange = record.header(b"Content-Range")
        length = producer.length if producer is not None else 0
        if contentRange is None:
            # A plain PUT: the whole file (here only used for empty files).
            first, total = 0, length
            if upload is not None and upload.complete:
                if producer is not None:
                    self.sim.soon(producer.stopProducing)
                return self._answerLater(FakeResponse(409, {}, b"exists"))
            upload = self.uploads[path] = StoredUpload(total=total)
        else:
            spec, _, totalText = contentRange[len(b"bytes "):].partition(b"/")
            firstText, _, lastText = spec.partition(b"-")
            first, last, total = int(firstText), int(lastText), int(totalText)
            assert last - first + 1 == length, (contentRange, length)
            if upload is None:
                upload = self.uploads[path] = StoredUpload(total=total)
            if upload.total != total:
                self.sim.soon(producer.stopProducing)
                return self._answerLater(
                    FakeResponse(409, {b"Upload-Length": b"%d" % (upload.total or 0)}, b"total differs")
                )
            if upload.complete:
                self.sim.soon(producer.stopProducing)
                digest = record.header(b"Repr-Digest")
                if digest is not None and digest != b64digest(bytes(upload.data)):
                    return self._answerLater(FakeResponse(409, {}, b"different content"))
                return self._answerLater(self._completed(path, upload, 200, False))
            if first > len(upload.data):
                self.sim.soon(producer.stopProducing)
                return self._answerLater(
                    FakeResponse(409, {b"Upload-Offset": b"%d" % len(upload.data)}, b"offset")
                )
        stored = upload
        self.active += 1
        self.maxActive = max(self.maxActive, self.active)
        state = {"done": False, "stalled": False}

        def finish() -> None:
            if not state["done"]:
                state["done"] = True
                self.active -= 1

        def canceller(d: Deferred[Any]) -> None:
            finish()
            producer.stopProducing()

        d: Deferred[Any] = Deferred(canceller)

        def lose() -> None:
            finish()
            producer.stopProducing()
            if not d.called:
                d.errback(ResponseNeverReceived([Failure(ConnectionLost("cut"))]))

        def onWrite(data: bytes) -> None:
            if state["done"] or state["stalled"]:
                return
            limit = None
            if isinstance(fault, (CutAfter, StallAfter)):
                limit = fault.n - record.received
                if limit < len(data):
                    data = data[: max(limit, 0)]
            for i, byte in enumerate(data):
                if first + record.received + i == len(stored.data):
                    stored.data.append(byte)
            record.received += len(data)
            if limit is not None and limit <= len(data) and record.received < length:
                if isinstance(fault, CutAfter):
                    self.sim.soon(lose)
                else:
                    state["stalled"] = True
                    self.sim.soon(producer.pauseProducing)

        def bodyDone(_: object) -> None:
            if state["done"]:
                return
            if isinstance(fault, CutAfter) and fault.n >= length:
                # The request is processed, but its answer is lost.
                self._respond(path, stored, record, fault)
                lose()
                return
            finish()
            d.callback(self._respond(path, stored, record, fault))

        if producer is None:
            bodyDone(None)
        else:
            producer.startProducing(_Consumer(onWrite)).addCallback(bodyDone)
        return d

    def _respond(self, path: str, upload: StoredUpload, record: RequestRecord, fault: object) -> FakeResponse:
        n = len(upload.data)
        if upload.total is not None and n == upload.total:
            digest = record.header(b"Repr-Digest")
            if digest is not None and digest != b64digest(bytes(upload.data)):
                del self.uploads[path]
                return FakeResponse(400, {}, b"Repr-Digest mismatch")
            upload.complete = True
            return self._completed(path, upload, 201, isinstance(fault, WrongDigest))
        return FakeResponse(
            204,
            {b"Upload-Offset": b"%d" % n, b"Upload-Complete": b"?0", b"Range": b"bytes=0-%d" % (n - 1)},
        )
