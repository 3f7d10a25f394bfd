"""
Tests for L{uploadsvc.web.limits}: the header deadline, connections per
client and the header size limit, driven deterministically with a
StringTransport and a Clock; and the options that set them.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from uploadsvc.tap import Options, makeService
from uploadsvc.web.limits import DEFAULT_HEADER_TIMEOUT, LimitedSite
from uploadsvc.web.receiver import UploadReceiver
from uploadsvc.web.streaming import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    deliverBody,
    whenFinished,
)
from uploadsvc.web.streaming.request import _BodyProducer

from .test_streaming import RecordingReceiver

IDLE = 60
HEADER = 10


class Echo(Resource):
    """
    Answers GET at once; takes PUT bodies into a receiver and leaves the
    request open.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render_GET(self, request: Any) -> bytes:
        self.requests.append(request)
        request.setHeader(b"Content-Length", b"2")
        return b"ok"

    def render_PUT(self, request: Any) -> Any:
        self.requests.append(request)
        deliverBody(request, RecordingReceiver())
        return NOT_DONE_YET


def client(host: str = "10.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


class LimitsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Echo()

    def site(self, **kwargs: Any) -> LimitedSite:
        kwargs.setdefault("headerTimeout", HEADER)
        return LimitedSite(self.resource, timeout=IDLE, reactor=self.clock, **kwargs)

    def connect(self, site: LimitedSite, addr: Any = None) -> tuple[Any, StringTransport]:
        protocol = site.buildProtocol(client() if addr is None else addr)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def close(self, protocol: Any) -> None:
        protocol.connectionLost(Failure(ConnectionError("closed")))


class HeaderDeadlineTests(LimitsTestCase):
    """
    The header block must be complete within the header timeout.
    """

    def test_tricklingHeadersClosed(self) -> None:
        """A client trickling header bytes, each within the idle timeout, is closed at the deadline."""
        channel, transport = self.connect(self.site())
        head = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50
        for byte in head[: HEADER * 2]:
            if transport.disconnecting:
                break
            channel.dataReceived(bytes([byte]))
            self.clock.advance(0.5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.resource.requests, [])

    def test_silentConnectionClosed(self) -> None:
        """A connection that sends nothing is closed at the header deadline, before the idle timeout."""
        channel, transport = self.connect(self.site())
        self.clock.advance(HEADER - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_completeHeadersCancel(self) -> None:
        """Once the header block is complete, a slow body is bounded by the idle timeout only."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for _ in range(HEADER * 3):
            channel.dataReceived(b"x")
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(IDLE)
        self.assertTrue(transport.disconnecting)

    def test_restartsForNextRequest(self) -> None:
        """After a response on a kept-alive connection the next header block has its own deadline."""
        channel, transport = self.connect(self.site())
        self.clock.advance(HEADER - 1)
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        self.clock.advance(HEADER - 1)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(self.resource.requests), 2)
        self.clock.advance(HEADER)
        self.assertTrue(transport.disconnecting)

    def test_pipelined(self) -> None:
        """Pipelined requests are all served, and the deadline then closes the idle connection."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(transport.value().count(b"200 OK"), 2)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(HEADER)
        self.assertTrue(transport.disconnecting)

    def test_lostConnectionCancels(self) -> None:
        """A connection that goes away leaves no deadline pending."""
        channel, transport = self.connect(self.site())
        self.close(channel)
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if c.func == channel._timedOut], []
        )

    def test_off(self) -> None:
        """With a header timeout of 0 only the idle timeout applies."""
        channel, transport = self.connect(self.site(headerTimeout=0))
        for _ in range(IDLE * 2):
            channel.dataReceived(b"G")
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)


class ConnectionsPerClientTests(LimitsTestCase):
    """
    Open connections per client address.
    """

    def test_extraClosedAtOnce(self) -> None:
        """A client over its limit has the extra connection aborted unread, the others unharmed."""
        site = self.site(maxConnectionsPerClient=2)
        first = self.connect(site)
        second = self.connect(site)
        extra, transport = self.connect(site)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(first[1].disconnecting or second[1].disconnecting)
        first[0].dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", first[1].value())
        self.assertEqual(site.connections, {"10.0.0.1": 2})

    def test_slotFreedOnClose(self) -> None:
        """When a connection closes its client may open another."""
        site = self.site(maxConnectionsPerClient=1)
        channel, _ = self.connect(site)
        self.assertTrue(self.connect(site)[1].disconnected)
        self.close(channel)
        self.assertEqual(site.connections, {})
        self.assertFalse(self.connect(site)[1].disconnected)

    def test_perAddress(self) -> None:
        """The limit counts each address on its own, IPv6 included."""
        site = self.site(maxConnectionsPerClient=1)
        self.connect(site, client("10.0.0.1"))
        self.assertFalse(self.connect(site, client("10.0.0.2"))[1].disconnected)
        self.assertFalse(self.connect(site, IPv6Address("TCP", "::1", 1))[1].disconnected)
        self.assertTrue(self.connect(site, client("10.0.0.2"))[1].disconnected)

    def test_unixNotCounted(self) -> None:
        """Connections over a UNIX socket (a front end's) are not limited."""
        site = self.site(maxConnectionsPerClient=1)
        for _ in range(3):
            self.assertFalse(self.connect(site, UNIXAddress(b"/run/u.sock"))[1].disconnected)

    def test_unlimited(self) -> None:
        """With no limit set, any number of connections from one address is accepted."""
        site = self.site()
        for _ in range(50):
            self.assertFalse(self.connect(site)[1].disconnected)
        self.assertEqual(site.connections, {"10.0.0.1": 50})


class HeaderSizeTests(LimitsTestCase):
    """
    The size of a header block: at most 100 fields and 16 KiB, refused
    while the block still arrives.
    """

    def assertRefused(self, transport: StringTransport, code: bytes) -> None:
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 " + code + b" "), out)
        self.assertIn(b"Connection: close\r\n", out)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.resource.requests, [])

    def test_overLimit(self) -> None:
        """A header block over 16 KiB is answered 431 and the connection closed, unrendered."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(
            b"GET /a HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(17))
            + b"\r\n"
        )
        self.assertRefused(transport, b"431")

    def test_tooManyFieldsRefusedEarly(self) -> None:
        """The 101st field is refused with 431 while the block is still unfinished."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /a HTTP/1.1\r\n")
        for i in range(MAX_HEADER_FIELDS):
            channel.dataReceived(b"X-%d: v\r\n" % (i,))
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"X-last: v\r\n")
        self.assertRefused(transport, b"431")

    def test_hundredFieldsServed(self) -> None:
        """A block of exactly 100 fields is served."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(
            b"GET /a HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: v\r\n" % (i,) for i in range(MAX_HEADER_FIELDS - 1))
            + b"\r\n"
        )
        self.assertIn(b"200 OK", transport.value())

    def test_unfinishedLineCounts(self) -> None:
        """Bytes of a field line that has not ended yet count: the block is refused before its CRLF."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"a" * 8400)
        self.assertRefused(transport, b"431")

    def test_longLine(self) -> None:
        """A single header line over 16 KiB, never ended, is refused too."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /a HTTP/1.1\r\nX-Pad: " + b"a" * 17000)
        self.assertRefused(transport, b"431")

    def test_longRequestLine(self) -> None:
        """A request line over 16 KiB is answered 414."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /" + b"a" * MAX_HEADER_BYTES)
        self.assertRefused(transport, b"414")

    def test_underLimit(self) -> None:
        """A header block just under the limit is served."""
        channel, transport = self.connect(self.site())
        channel.dataReceived(b"GET /a HTTP/1.1\r\nX-Pad: " + b"a" * 15000 + b"\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())

    def test_countRestartsPerRequest(self) -> None:
        """Each request of a kept-alive connection has its own budget."""
        channel, transport = self.connect(self.site())
        block = b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(90)
        ) + b"\r\n"
        for _ in range(3):
            channel.dataReceived(block)
        self.assertEqual(transport.value().count(b"200 OK"), 3)
        self.assertFalse(transport.disconnecting)


class LimitOptionsTests(SynchronousTestCase):
    """
    The limit options of C{twistd uploadsvc}.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """No per-client limit and a 30 s header deadline by default."""
        options = self.parse()
        self.assertEqual(options["max-connections-per-client"], 0)
        self.assertEqual(options["header-timeout"], DEFAULT_HEADER_TIMEOUT)
        self.assertEqual(DEFAULT_HEADER_TIMEOUT, 30)

    def test_bad(self) -> None:
        """Negative values are refused."""
        for argv in [
            ["--max-connections-per-client", "-1"],
            ["--header-timeout", "-1"],
            ["--header-timeout", "soon"],
        ]:
            self.assertRaises(UsageError, self.parse, *argv)

    def test_siteConfigured(self) -> None:
        """makeService listens with a LimitedSite set from the options."""
        reactor = MemoryReactorClock()
        options = self.parse(
            "--root", os.path.abspath(self.mktemp()), "--max-connections-per-client", "4",
            "--header-timeout", "7",
        )
        svc = makeService(options, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        site = reactor.tcpServers[0][1]
        self.assertIsInstance(site, LimitedSite)
        self.assertEqual((site.maxConnectionsPerClient, site.headerTimeout), (4, 7))


class HTTP2Tests(LimitsTestCase):
    """
    HTTP/2 connections.
    """

    def test_noDeadlineAfterH2(self) -> None:
        """A connection that negotiated h2 by ALPN keeps no header deadline."""
        site = self.site()
        received: list[bytes] = []

        class Inner(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        transport = StringTransport()
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        guard = site.buildProtocol(client())
        guard.inner = Inner()
        guard.makeConnection(transport)
        guard.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.assertEqual(received, [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
        self.clock.advance(HEADER * 10)
        self.assertFalse(transport.disconnecting)


class OpenRequestCostTests(LimitsTestCase):
    """
    What the site keeps for each request still open (an open upload).
    """

    def test_oneSubscription(self) -> None:
        """
        The site (limits, access log and metrics together) subscribes once
        to the end of an open request: one Deferred kept, not one each.
        """
        from uploadsvc.ops.metrics import Metrics
        from uploadsvc.web.observed import ObservedSite

        site = ObservedSite(
            self.resource, metrics=Metrics(), timeout=IDLE, reactor=self.clock,
            headerTimeout=HEADER,
        )
        channel, transport = self.connect(site)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nxx")
        [request] = self.resource.requests
        self.assertEqual(len(request.notifications), 1)
        self.assertEqual(site.inFlight, 1)
        self.close(channel)
        self.assertEqual(site.inFlight, 0)

    def test_noDeferredKept(self) -> None:
        """
        The site's subscription to an open request's end is a small
        listener, not a L{Deferred} with its callback chain; it is told
        when the answer is done.
        """
        site = self.site()
        channel, transport = self.connect(site)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        [request] = self.resource.requests
        [listener] = request.notifications
        self.assertNotIsInstance(listener, Deferred)
        self.assertEqual(site.inFlight, 1)
        request.setHeader(b"Content-Length", b"0")
        request.finish()
        self.assertEqual(site.inFlight, 0)
        self.assertEqual(request.notifications, [])

    def test_listenerFailureLogged(self) -> None:
        """
        A listener that raises is logged, and the listeners after it are
        still told (as Deferreds would be).
        """
        site = self.site()
        channel, transport = self.connect(site)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        [request] = self.resource.requests
        told: list[object] = []

        def boom(result: object) -> None:
            raise ZeroDivisionError()

        whenFinished(request, boom)
        whenFinished(request, lambda result, tag: told.append((result, tag)), "after")
        self.close(channel)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [(result, tag)] = told
        self.assertIsInstance(result, Failure)
        self.assertEqual(tag, "after")
        self.assertEqual(site.inFlight, 0)

    def test_stockRequest(self) -> None:
        """
        On a request that is not a L{StreamingRequest}, L{whenFinished}
        takes C{notifyFinish}.
        """
        from twisted.web.server import Request
        from twisted.web.test.requesthelper import DummyChannel

        request = Request(DummyChannel())
        told: list[object] = []
        whenFinished(request, lambda result: told.append(result))
        [d] = request.notifications
        self.assertIsInstance(d, Deferred)
        request.connectionLost(Failure(ConnectionError("gone")))
        [result] = told
        self.assertIsInstance(result, Failure)

    def test_noInstanceDicts(self) -> None:
        """
        The per-connection and per-upload objects of ours hold no instance
        dict (C{__slots__}), an open upload's channel no set of pause
        reasons, and a request whose body had no early bytes no list for
        them.
        """
        site = self.site()
        channel, transport = self.connect(site)
        channel.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        [request] = self.resource.requests
        self.assertEqual(type(channel).__dictoffset__, 0)
        receiver = UploadReceiver(lambda producer: None, 0, None, lambda: None)  # type: ignore[arg-type,return-value]
        self.assertEqual(type(receiver).__dictoffset__, 0)
        self.assertEqual(type(_BodyProducer(request)).__dictoffset__, 0)
        self.assertIsInstance(channel.inner._channel._bodyPauses, tuple)
        self.assertEqual(request._early, ())

    def test_channelDictShared(self) -> None:
        """
        The channel of an open upload (headers in, body paused and resumed)
        has fewer than 30 instance attributes, Twisted's and ours: CPython
        shares the keys of instance dicts up to that size (a dict of ~300
        bytes per connection instead of ~1.6 KiB).
        """
        site = self.site()
        guard, transport = self.connect(site)
        guard.dataReceived(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nxx")
        [request] = self.resource.requests
        channel = guard.inner._channel
        channel._pauseBody("receiver")
        channel._resumeBody("receiver")
        self.assertLess(len(vars(channel)), 30, sorted(vars(channel)))
