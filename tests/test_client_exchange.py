"""
Tests for L{uploadsvc.client.exchange}: one request and its answer, read
whole (the resume loop's tests in tests/test_client_uploader.py drive it
through a scripted server).
"""

from __future__ import annotations

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from uploadsvc.client.decisions import Answer
from uploadsvc.client.errors import Retryable
from uploadsvc.client.exchange import MAX_ANSWER, HTTPExchange, answerFrom
from uploadsvc.client.testing import Answer as Scripted
from uploadsvc.client.testing import FakeServer, Refuse, Simulation


class AnswerFromTests(SynchronousTestCase):
    """
    Tests for L{answerFrom}.
    """

    def test_headers(self) -> None:
        """
        Repeated headers are joined with C{", "}, and names match without
        case.
        """
        headers = Headers({b"Repr-Digest": [b"sha-256=:a:", b"sha-512=:b:"], b"Upload-Offset": [b"5"]})
        answer = answerFrom(201, headers, b"body")
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header(b"repr-digest"), b"sha-256=:a:, sha-512=:b:")
        self.assertEqual(answer.intHeader(b"UPLOAD-OFFSET"), 5)
        self.assertEqual(answer.body, b"body")


class RequestTests(SynchronousTestCase):
    """
    Tests for L{HTTPExchange.request}.
    """

    def setUp(self) -> None:
        self.sim = Simulation()
        self.server = FakeServer(self.sim)
        self.exchange = HTTPExchange(
            HTTPClient(self.server), self.sim.clock, 10.0, {"Authorization": "Bearer t"}
        )

    def request(self) -> Answer:
        return self.sim.run(
            Deferred.fromCoroutine(self.exchange.request("HEAD", "http://h/a", {b"X-Extra": b"1"}))
        )

    def test_answerReadWhole(self) -> None:
        """
        The answer comes back as an L{Answer}; the configured and the extra
        headers went with the request.
        """
        self.server.faults[0] = Scripted(409, {b"Upload-Offset": b"7"}, b"offset\n")
        answer = self.request()
        self.assertIsInstance(answer, Answer)
        self.assertEqual(
            (answer.code, answer.header(b"Upload-Offset"), answer.body), (409, b"7", b"offset\n")
        )
        (record,) = self.server.log
        self.assertEqual(
            (record.header(b"Authorization"), record.header(b"X-Extra")), (b"Bearer t", b"1")
        )

    def test_longAnswerCut(self) -> None:
        """
        An answer's body is kept up to L{MAX_ANSWER} bytes.
        """
        self.server.faults[0] = Scripted(500, {}, b"x" * (MAX_ANSWER + 10))
        self.assertEqual(self.request().body, b"x" * MAX_ANSWER)

    def test_failureSorted(self) -> None:
        """
        A refused connection is a L{Retryable} named plainly.
        """
        self.server.faults[0] = Refuse()
        error = self.assertRaises(Retryable, self.request)
        self.assertEqual(error.reason, "connection refused")
