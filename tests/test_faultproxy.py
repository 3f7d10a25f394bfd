"""
Tests for L{uploadsvc.testing.faultproxy}, over real loopback sockets with
small amounts of data; time-based behaviour (latency, bandwidth) runs on a
L{Clock}, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from uploadsvc.testing.faultproxy import FaultPlan, FaultProxy
from tests.support.polling import waitUntil


class Recorder(Protocol):
    """
    Keeps what it receives and how its connection ended.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Deferred[None] = Deferred()
        self.reason: Any = None

    @property
    def tcp(self) -> Any:
        """
        The TCP transport.
        """
        return self.transport

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.callback(None)


class RecorderFactory(ServerFactory):
    def __init__(self) -> None:
        self.protocols: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        p = Recorder()
        self.protocols.append(p)
        return p


class OneClient(ClientFactory):
    def __init__(self) -> None:
        self.protocol_ = Recorder()
        self.connected: Deferred[Recorder] = Deferred()

    def buildProtocol(self, addr: Any) -> Recorder:
        self.connected.callback(self.protocol_)
        return self.protocol_


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class ProxyTestsMixin(_Base):
    """
    A recording server on loopback and a proxy in front of it.
    """

    timeout = 30

    def startProxy(self, plan: FaultPlan, clock: Clock | None = None, seed: int = 0) -> FaultProxy:
        self.serverFactory = RecorderFactory()
        listening = reactor.listenTCP(0, self.serverFactory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        serverPort = cast(IPv4Address, listening.getHost()).port
        proxy = FaultProxy(reactor, ("127.0.0.1", serverPort), plan, seed=seed, clock=clock)
        proxy.listen()
        self.addCleanup(proxy.stop)
        return proxy

    async def connect(self, proxy: FaultProxy) -> Recorder:
        before = len(self.serverFactory.protocols)
        factory = OneClient()
        connector = reactor.connectTCP("127.0.0.1", proxy.port, factory)
        self.addCleanup(connector.disconnect)
        client = await factory.connected
        await waitUntil(
            lambda: len(self.serverFactory.protocols) > before, "the server side connected"
        )
        return client

    @property
    def server(self) -> Recorder:
        """
        The server side of the newest connection.
        """
        return self.serverFactory.protocols[-1]


PAYLOAD = random.Random(5).randbytes(200_000)


class PassThroughTests(ProxyTestsMixin, TestCase):
    """
    Without faults the proxy is a faithful pipe.
    """

    async def test_bothDirections(self) -> None:
        """
        Bytes go through unchanged both ways and are counted, and a close
        by the server reaches the client.
        """
        proxy = self.startProxy(FaultPlan())
        client = await self.connect(proxy)
        client.tcp.write(PAYLOAD)
        await waitUntil(lambda: len(self.server.data) >= len(PAYLOAD), "all bytes arrived")
        self.server.tcp.write(b"answer")
        await waitUntil(lambda: client.data == b"answer", "the answer arrived")
        self.server.tcp.loseConnection()
        await client.lost
        self.assertEqual(bytes(self.server.data), PAYLOAD)
        stats = proxy.stats
        self.assertEqual(
            (stats.connections, stats.bytesFromClient, stats.bytesToServer, stats.bytesToClient),
            (1, len(PAYLOAD), len(PAYLOAD), 6),
        )
        self.assertEqual((stats.cuts, stats.resets, stats.stalls), (0, 0, 0))


class FaultTests(ProxyTestsMixin, TestCase):
    """
    Cuts, resets and stalls after a set number of bytes.
    """

    async def test_cutAfterBytes(self) -> None:
        """
        A cut forwards exactly the drawn number of bytes, then closes both
        sides; the server sees a clean end of stream.
        """
        proxy = self.startProxy(FaultPlan(cutAfter=(12_345, 12_345)))
        client = await self.connect(proxy)
        client.tcp.write(PAYLOAD)
        await self.server.lost
        await client.lost
        self.assertEqual(bytes(self.server.data), PAYLOAD[:12_345])
        self.assertIsInstance(self.server.reason.value, ConnectionDone)
        self.assertEqual(proxy.stats.cuts, 1)
        self.assertEqual(proxy.stats.bytesToServer, 12_345)
        self.assertEqual(proxy.connections[0].toServer, 12_345)

    async def test_reset(self) -> None:
        """
        A reset aborts both sides: the server sees a lost connection, not a
        clean end, and got at most a prefix up to the threshold.
        """
        proxy = self.startProxy(FaultPlan(cutAfter=(5000, 5000), cut=0, reset=1))
        client = await self.connect(proxy)
        client.tcp.write(PAYLOAD)
        await self.server.lost
        await client.lost
        self.assertIsInstance(self.server.reason.value, ConnectionLost)
        self.assertLessEqual(len(self.server.data), 5000)
        self.assertEqual(bytes(self.server.data), PAYLOAD[: len(self.server.data)])
        self.assertEqual(proxy.stats.resets, 1)

    async def test_stall(self) -> None:
        """
        A stall stops forwarding without closing anything: the server keeps
        an open connection with the bytes up to the threshold, also after
        the client gave up and closed its side, while other connections
        carry on.
        """
        proxy = self.startProxy(FaultPlan(cutAfter=(7000, 7000), cut=0, stall=1))
        client = await self.connect(proxy)
        stalledServer = self.server
        client.tcp.write(PAYLOAD[:50_000])
        await waitUntil(lambda: len(stalledServer.data) >= 7000, "the threshold arrived")
        self.assertEqual(proxy.stats.stalls, 1)
        client.tcp.abortConnection()
        await client.lost
        # A full exchange on a second, healthy connection.
        proxy.setPlan(FaultPlan())
        other = await self.connect(proxy)
        other.tcp.write(b"ping")
        await waitUntil(lambda: self.server.data == b"ping", "the second connection works")
        self.server.tcp.write(b"pong")
        await waitUntil(lambda: other.data == b"pong", "the answer arrived")
        self.assertFalse(stalledServer.lost.called)
        self.assertEqual(bytes(stalledServer.data), PAYLOAD[:7000])
        self.assertFalse(proxy.connections[0].serverLost.called)
        # Stopping the proxy drops the half-dead connection.
        await proxy.stop()
        await stalledServer.lost

    async def test_secondConnectionOwnFate(self) -> None:
        """
        Each connection draws its own threshold: with a range, several
        connections get different cuts, all within the range.
        """
        proxy = self.startProxy(FaultPlan(cutAfter=(1000, 20_000)), seed=3)
        for i in range(3):
            client = await self.connect(proxy)
            client.tcp.write(PAYLOAD)
            await client.lost
            await self.server.lost
            self.assertEqual(bytes(self.server.data), PAYLOAD[: proxy.connections[i].threshold])
        thresholds = [c.threshold for c in proxy.connections]
        self.assertEqual(thresholds, [c.toServer for c in proxy.connections])
        self.assertTrue(all(t is not None and 1000 <= t <= 20_000 for t in thresholds))
        self.assertEqual(len(set(thresholds)), 3)


class TimingTests(ProxyTestsMixin, TestCase):
    """
    Latency and the bandwidth cap, on a fake clock.
    """

    async def test_latency(self) -> None:
        """
        Bytes are held for the latency before they are forwarded.
        """
        clock = Clock()
        proxy = self.startProxy(FaultPlan(latency=2.0), clock=clock)
        client = await self.connect(proxy)
        client.tcp.write(b"x" * 1000)
        await waitUntil(lambda: proxy.stats.bytesFromClient == 1000, "the proxy read the bytes")
        clock.advance(1.9)
        self.assertEqual(proxy.stats.bytesToServer, 0)
        clock.advance(0.1)
        self.assertEqual(proxy.stats.bytesToServer, 1000)
        await waitUntil(lambda: len(self.server.data) == 1000, "the bytes arrived")

    async def test_bandwidthCap(self) -> None:
        """
        No more than the rate times the elapsed time goes through, and no
        more than one burst after an idle while.
        """
        clock = Clock()
        proxy = self.startProxy(FaultPlan(bandwidth=65536, burst=16384), clock=clock)
        client = await self.connect(proxy)
        client.tcp.write(PAYLOAD[:100_000])
        await waitUntil(lambda: proxy.stats.bytesFromClient == 100_000, "the proxy read the bytes")
        self.assertEqual(proxy.stats.bytesToServer, 0)
        forwarded = []
        for step in (0.25, 0.25, 1.0):
            clock.advance(step)
            forwarded.append(proxy.stats.bytesToServer)
        self.assertEqual(forwarded, [16384, 32768, 49152])
        await waitUntil(lambda: len(self.server.data) == 49152, "the bytes arrived")
        self.assertEqual(bytes(self.server.data), PAYLOAD[:49152])


class PlanTests(SynchronousTestCase):
    """
    L{FaultPlan.draw}: seeded fates.
    """

    def test_replay(self) -> None:
        """
        The same seed gives the same fates; another seed other fates.
        """
        plan = FaultPlan(cutAfter=(100, 10_000), cut=1, reset=1, stall=1, probability=0.8)

        def fates(seed: int) -> list:
            rng = random.Random(seed)
            return [plan.draw(rng) for _ in range(50)]

        self.assertEqual(fates(1), fates(1))
        self.assertNotEqual(fates(1), fates(2))
        kinds = {kind for kind, _ in fates(1)}
        self.assertEqual(kinds, {None, "cut", "reset", "stall"})

    def test_noFaultsWithoutRange(self) -> None:
        """
        Without C{cutAfter} no connection is faulty.
        """
        rng = random.Random(0)
        self.assertEqual({FaultPlan().draw(rng) for _ in range(20)}, {(None, None)})

    def test_badPlans(self) -> None:
        """
        Impossible plans are refused when made.
        """
        self.assertRaises(ValueError, FaultPlan, cutAfter=(10, 5))
        self.assertRaises(ValueError, FaultPlan, cut=0)
        self.assertRaises(ValueError, FaultPlan, probability=2)
        self.assertRaises(ValueError, FaultPlan, bandwidth=0)
