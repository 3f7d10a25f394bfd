"""
Tests for L{uploadsvc.web.streaming.sendInterim}: an interim answer (the
draft's C{104 Upload Resumption Supported}) goes out before the final one on
HTTP/1.1 (a status line and fields on the transport) and on HTTP/2 (a
HEADERS frame without END_STREAM), and never where it must not.
Deterministic: StringTransport, Clock, h11 and the h2 library as parsers.
"""

from __future__ import annotations

from typing import Any

import h11
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import H2_ENABLED

from tests.test_streaming import BodyResource, RecordingReceiver, connect, put
from uploadsvc.web.streaming import deliverBody, sendInterim

if H2_ENABLED:
    import h2.events

    from tests.test_streaming_h2 import connect as connectH2
    from tests.test_streaming_h2 import status

LOCATION = (b"Location", b"/.uploads/0123456789abcdef0123456789abcdef")


class InterimResource(BodyResource):
    """
    Sends a 104 with C{LOCATION} before accepting the body; records
    whether it went out.
    """

    def __init__(self) -> None:
        super().__init__(lambda r: RecordingReceiver())
        self.sent: list[bool] = []
        self.accept = False

    def render_PUT(self, request: Any) -> Any:
        result = super().render_PUT(request)
        self.sent.append(sendInterim(request, 104, [LOCATION, (b"Upload-Limit", b"max-size=10")]))
        self.startBody(request)
        return result

    render_POST = render_PUT


def events(data: bytes, method: bytes = b"PUT") -> list[Any]:
    """
    What a strict HTTP/1.1 client (h11) reads from C{data}.
    """
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target=b"/a", headers=[(b"Host", b"x"), (b"Content-Length", b"3")]))
    client.send(h11.Data(data=b"abc"))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    out: list[Any] = []
    while True:
        event = client.next_event()
        if event in (h11.NEED_DATA, h11.PAUSED):
            return out
        out.append(event)


class HTTP1InterimTests(SynchronousTestCase):
    """
    On HTTP/1.1 the interim answer is a status line and fields ahead of the
    final answer.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_beforeFinal(self) -> None:
        """A 104 with its fields goes out at header time, then the final answer, on a connection that stays open."""
        resource = InterimResource()
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 3))
        self.assertEqual(resource.sent, [True])
        self.assertTrue(
            transport.value().startswith(
                b"HTTP/1.1 104 Upload Resumption Supported\r\n"
                b"Location: /.uploads/0123456789abcdef0123456789abcdef\r\n"
                b"Upload-Limit: max-size=10\r\n\r\n"
            )
        )
        channel.dataReceived(b"abc")
        request = resource.requests[0]
        request.setResponseCode(204)
        request.finish()
        interim, final = events(transport.value())[:2]
        self.assertIsInstance(interim, h11.InformationalResponse)
        self.assertEqual(interim.status_code, 104)
        self.assertIn((b"location", LOCATION[1]), interim.headers)
        self.assertIsInstance(final, h11.Response)
        self.assertEqual(final.status_code, 204)
        self.assertFalse(transport.disconnecting)
        # The connection reads the next request.
        transport.clear()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())

    def test_withContinue(self) -> None:
        """With Expect: 100-continue the 104 goes first and 100 Continue still follows when the body is accepted."""
        resource = InterimResource()
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 3, b"Expect: 100-continue"))
        value = transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 104 "))
        self.assertIn(b"\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", value)
        channel.dataReceived(b"abc")
        self.assertEqual(b"".join(resource.receivers[0].chunks), b"abc")

    def test_notToHTTP10(self) -> None:
        """An HTTP/1.0 client gets no interim answer (RFC 9110 section 15.2)."""
        resource = InterimResource()
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(b"PUT /a HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(resource.sent, [False])
        self.assertEqual(transport.value(), b"")

    def test_notAfterFinal(self) -> None:
        """Once the final answer started, nothing interim is written."""
        resource = BodyResource(lambda r: RecordingReceiver())
        resource.refuse = True
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 3))
        before = transport.value()
        self.assertFalse(sendInterim(resource.requests[0], 104, [LOCATION]))
        self.assertEqual(transport.value(), before)

    def test_notBodiless(self) -> None:
        """A request that took Twisted's own path (no body) gets no interim answer."""

        class Bodiless(BodyResource):
            sent: list[bool] = []

            def render_PUT(self, request: Any) -> Any:
                self.sent.append(sendInterim(request, 104, [LOCATION]))
                request.setHeader(b"Content-Length", b"0")
                return b""

        resource = Bodiless(lambda r: RecordingReceiver())
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 0))
        self.assertEqual(resource.sent, [False])
        self.assertNotIn(b"104", transport.value())

    def test_malformedField(self) -> None:
        """A field value with CR or LF (which would split the answer) or an unknown status is refused."""
        resource = BodyResource(lambda r: RecordingReceiver())
        resource.accept = False
        channel, transport = connect(resource, self.clock)
        channel.dataReceived(put(b"/a", 3))
        request = resource.requests[0]
        self.assertRaises(ValueError, sendInterim, request, 104, [(b"Location", b"/x\r\nSet-Cookie: a")])
        self.assertRaises(ValueError, sendInterim, request, 104, [(b"Bad Name", b"x")])
        self.assertRaises(ValueError, sendInterim, request, 199, [])
        self.assertEqual(transport.value(), b"")
        deliverBody(request, RecordingReceiver())


class HTTP2InterimTests(SynchronousTestCase):
    """
    On HTTP/2 the interim answer is a HEADERS frame with :status 104 that
    does not end the stream.
    """

    skip = None if H2_ENABLED else "the h2 package is not installed"

    def test_beforeFinal(self) -> None:
        """The client's h2 state machine reads an informational 104 with its fields, then the body flows and the final answer ends the stream."""
        clock = Clock()
        resource = InterimResource()
        client = connectH2(resource, clock)
        sid = client.request(b"PUT", b"/a", (b"content-length", b"3"))
        self.assertEqual(resource.sent, [True])
        [informational] = client.of(h2.events.InformationalResponseReceived, sid)
        self.assertEqual(status(informational), b"104")
        self.assertIn((b"location", LOCATION[1]), informational.headers)
        self.assertEqual(client.of(h2.events.StreamEnded, sid), [])
        client.send(sid, b"abc", end=True)
        self.assertEqual(b"".join(resource.receivers[0].chunks), b"abc")
        request = resource.requests[0]
        request.setResponseCode(204)
        request.finish()
        client.exchange()
        [response] = client.of(h2.events.ResponseReceived, sid)
        self.assertEqual(status(response), b"204")
        self.assertTrue(client.of(h2.events.StreamEnded, sid))
