"""
L{uploadsvc.ops.hookhttp.HTTPHook}: the request it sends and how it reads
the answer, against an in-memory resource (treq's StubTreq) and a L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from uploadsvc.ops.hookhttp import SECRET_HEADER, HTTPHook
from uploadsvc.ops.hooks import MAX_ANSWER_BYTES, HookFailed, Proceed, Refuse

URL = "http://hooks.example/in"
PAYLOAD = json.dumps({"hook": "pre-create"}).encode()


class Endpoint(Resource):
    """
    Answers every POST with the code and body the test set, and keeps
    what it was sent.
    """

    isLeaf = True

    def __init__(self, code: int = 200, body: bytes = b"") -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.received: list[tuple[dict[bytes, list[bytes]], bytes]] = []

    def render_POST(self, request: Any) -> bytes:
        self.received.append(
            (dict(request.requestHeaders.getAllRawHeaders()), request.content.read())
        )
        request.setResponseCode(self.code)
        return self.body


class NeverAnswers:
    """
    A treq client whose requests never get an answer; remembers whether
    they were cancelled.
    """

    def __init__(self) -> None:
        self.cancelled = False

    def post(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            # As twisted.web.client.Agent reports a request cancelled
            # before its answer.
            self.cancelled = True
            d.errback(ResponseNeverReceived([Failure(CancelledError())]))

        return Deferred(cancel)


class Trickles(Resource):
    """
    Answers 200 at once with a first byte of its body, and never ends it;
    keeps whether the connection was lost.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.ended: list[object] = []

    def render_POST(self, request: Any) -> Any:
        request.setResponseCode(200)
        request.write(b" ")
        request.notifyFinish().addBoth(self.ended.append)
        return NOT_DONE_YET


class Refusing:
    def post(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        d.errback(ConnectionRefusedError("127.0.0.1:9"))
        return d


class HTTPHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def hook(self, endpoint: Endpoint, secret: Any = None) -> HTTPHook:
        return HTTPHook(URL, StubTreq(endpoint), self.clock, 5.0, secret)

    def test_posts(self) -> None:
        """The event is POSTed as JSON with the hook's name in a header."""
        endpoint = Endpoint(204)
        self.assertEqual(self.successResultOf(self.hook(endpoint).call("pre-create", PAYLOAD)), Proceed())
        [(headers, body)] = endpoint.received
        self.assertEqual(body, PAYLOAD)
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])
        self.assertEqual(headers[b"Uploadsvc-Hook"], [b"pre-create"])
        self.assertNotIn(SECRET_HEADER, headers)

    def test_secret(self) -> None:
        """The shared secret goes in its header."""
        endpoint = Endpoint(200)
        self.successResultOf(self.hook(endpoint, lambda: b"s" * 20).call("pre-finish", PAYLOAD))
        self.assertEqual(endpoint.received[0][0][SECRET_HEADER], [b"s" * 20])

    def test_noSecretNoCall(self) -> None:
        """When the secret cannot be had (its file emptied), nothing is sent and the call fails."""
        endpoint = Endpoint(200)
        self.failureResultOf(self.hook(endpoint, lambda: None).call("pre-finish", PAYLOAD), HookFailed)
        self.assertEqual(endpoint.received, [])

    def test_refusal(self) -> None:
        """A 4xx answer refuses with its reason."""
        endpoint = Endpoint(403, b'{"reason": "over quota"}')
        self.assertEqual(
            self.successResultOf(self.hook(endpoint).call("pre-create", PAYLOAD)),
            Refuse(403, "over quota"),
        )

    def test_path(self) -> None:
        """A 200 answer may name another destination."""
        endpoint = Endpoint(200, b'{"path": "x/y.bin"}')
        self.assertEqual(
            self.successResultOf(self.hook(endpoint).call("pre-create", PAYLOAD)), Proceed("x/y.bin")
        )

    def test_serverError(self) -> None:
        """A 5xx is a failure, whatever its body says."""
        endpoint = Endpoint(500, b"{}")
        failure = self.failureResultOf(self.hook(endpoint).call("pre-create", PAYLOAD), HookFailed)
        self.assertIn("500", failure.value.reason)

    def test_garbage(self) -> None:
        """A 200 whose body is not an answer document is a failure."""
        endpoint = Endpoint(200, b"<html>hello</html>")
        self.failureResultOf(self.hook(endpoint).call("pre-create", PAYLOAD), HookFailed)

    def test_tooLong(self) -> None:
        """An answer longer than the limit is a failure, not read whole."""
        endpoint = Endpoint(200, b" " * (MAX_ANSWER_BYTES + 10))
        failure = self.failureResultOf(self.hook(endpoint).call("pre-create", PAYLOAD), HookFailed)
        self.assertIn("longer", failure.value.reason)

    def test_timeout(self) -> None:
        """No answer within the time limit: the request is cancelled and the call fails."""
        client = NeverAnswers()
        hook = HTTPHook(URL, client, self.clock, 5.0)
        d = hook.call("pre-create", PAYLOAD)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, HookFailed)
        self.assertIn("within 5 s", failure.value.reason)
        self.assertTrue(client.cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutWhileReadingTheBody(self) -> None:
        """
        An endpoint that sends its headers, then its body too slowly, fails
        the call at the time limit, and its connection is closed (not left
        open for as long as the endpoint keeps trickling).
        """
        endpoint = Trickles()
        client = StubTreq(endpoint)
        d = HTTPHook(URL, client, self.clock, 5.0).call("pre-create", PAYLOAD)
        client.flush()
        self.assertNoResult(d)
        self.assertEqual(endpoint.ended, [])
        self.clock.advance(5)
        failure = self.failureResultOf(d, HookFailed)
        self.assertIn("within 5 s", failure.value.reason)
        client.flush()
        [ended] = endpoint.ended
        self.assertIsInstance(ended, Failure)  # the connection was lost
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answeredInTime(self) -> None:
        """An answer in time leaves no timer behind."""
        self.successResultOf(self.hook(Endpoint(204)).call("pre-create", PAYLOAD))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unreachable(self) -> None:
        """A refused connection is a failure; the endpoint is shown without its secrets."""
        hook = HTTPHook("http://user:pw@127.0.0.1:9/in?token=t0k", Refusing(), self.clock, 5.0)
        self.assertEqual(hook.shown, "http://127.0.0.1:9/in")
        failure = self.failureResultOf(hook.call("post-finish", PAYLOAD), HookFailed)
        self.assertIn("ConnectionRefusedError", failure.value.reason)
        self.assertNotIn("pw", failure.value.reason)
        self.assertNotIn("t0k", failure.value.reason)
