"""
A TCP proxy on loopback that makes a link bad on purpose: it cuts
connections after a random number of bytes, stalls them (stops forwarding
without closing: a half-dead link that neither end notices), resets them,
adds latency and caps bandwidth.

Every connection draws its fate from one seeded L{random.Random} when it is
accepted, so a failing run can be replayed with the same seed (given the
same order of connections). The proxy counts the bytes it carries, so tests
can check how much a client really sent.

From a trial test::

    proxy = FaultProxy(reactor, ("127.0.0.1", server.port),
                       FaultPlan(cutAfter=(256 * 1024, 4 * 1024 * 1024)), seed=1)
    proxy.listen()
    self.addCleanup(proxy.stop)
    url = f"http://127.0.0.1:{proxy.port}/a.bin"

From a shell::

    python -m uploadsvc.testing.faultproxy --target 127.0.0.1:8080 \\
        --port 9090 --cut 256K-4M --stall 0.1 --seed 7
"""

from __future__ import annotations

import random
import sys
from collections import deque
from typing import Any, Callable, Sequence, cast

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory
from twisted.python.failure import Failure
from zope.interface import implementer

#: Queued bytes per direction above which the proxy stops reading the
#: sending side, and below which it reads again.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

CUT = "cut"
RESET = "reset"
STALL = "stall"


@attrs.frozen
class FaultPlan:
    """
    What the proxy does to each new connection.

    @ivar cutAfter: C{(low, high)}: a faulty connection fails once it has
        forwarded a number of client-to-server bytes drawn uniformly from
        this range; L{None} for no faults.
    @ivar cut: weight of a clean cut (both sides closed) among the faults.
    @ivar reset: weight of a reset (both sides aborted, RST).
    @ivar stall: weight of a stall (forwarding stops, both sides stay open;
        the server side is never closed by the proxy).
    @ivar probability: the chance that a connection is faulty at all.
    @ivar latency: seconds added to every chunk, in both directions.
    @ivar bandwidth: bytes per second in each direction of each connection,
        or L{None} for no cap.
    @ivar burst: the most bytes sent at once under the cap (default: 1/20 s
        worth).
    """

    cutAfter: tuple[int, int] | None = None
    cut: float = 1.0
    reset: float = 0.0
    stall: float = 0.0
    probability: float = 1.0
    latency: float = 0.0
    bandwidth: int | None = None
    burst: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.cutAfter is not None and not 0 <= self.cutAfter[0] <= self.cutAfter[1]:
            raise ValueError("cutAfter must be (low, high) with 0 <= low <= high")
        if min(self.cut, self.reset, self.stall) < 0 or self.cut + self.reset + self.stall <= 0:
            raise ValueError("fault weights must be non-negative and not all zero")
        if not 0 <= self.probability <= 1:
            raise ValueError("probability must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("latency must not be negative")
        if self.bandwidth is not None and self.bandwidth < 1:
            raise ValueError("bandwidth must be positive")

    def draw(self, rng: random.Random) -> tuple[str | None, int | None]:
        """
        The fate of one connection: C{(kind, threshold)}, or C{(None, None)}.

        The same number of random values is drawn whatever the outcome, so
        that one connection's fate does not shift the next ones'.
        """
        faulty = rng.random() < self.probability
        low, high = self.cutAfter or (0, 0)
        threshold = rng.randint(low, high)
        (kind,) = rng.choices((CUT, RESET, STALL), (self.cut, self.reset, self.stall))
        if self.cutAfter is None or not faulty:
            return None, None
        return kind, threshold

    @property
    def burstBytes(self) -> int:
        if self.bandwidth is None:
            return 0
        return self.burst if self.burst is not None else max(1, self.bandwidth // 20)


@attrs.define
class ProxyStats:
    """
    Totals over all connections.
    """

    connections: int = 0
    cuts: int = 0
    resets: int = 0
    stalls: int = 0
    bytesFromClient: int = 0
    bytesToServer: int = 0
    bytesFromServer: int = 0
    bytesToClient: int = 0


@implementer(IPushProducer)
class _Pipe:
    """
    One direction of a proxied connection: reads from C{source}, queues,
    writes to C{sink} with latency and the bandwidth cap, and keeps the
    source paused while the queue is long or the sink is full.
    """

    def __init__(
        self,
        connection: ProxiedConnection,
        clock: IReactorTime,
        plan: FaultPlan,
        onForward: Callable[[int], None],
        budget: int | None,
    ) -> None:
        self._connection = connection
        self._clock = clock
        self._plan = plan
        self._onForward = onForward
        self.budget = budget
        self.source: Any = None
        self.sink: Any = None
        self._queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self._sinkPaused = False
        self._sourcePaused = False
        self.halted = False
        self.sourceDone = False
        self._tokens = 0.0
        self._lastRefill = clock.seconds()
        self._call: Any = None

    # IPushProducer, for the sink's transport.
    def pauseProducing(self) -> None:
        self._sinkPaused = True

    def resumeProducing(self) -> None:
        self._sinkPaused = False
        self.pump()

    def stopProducing(self) -> None:
        self.halt()

    def attach(self, sink: Any) -> None:
        """
        Start writing to C{sink} (a transport).
        """
        self.sink = sink
        sink.registerProducer(self, True)
        self.pump()

    def received(self, data: bytes) -> None:
        if self.halted:
            return
        self._queue.append((self._clock.seconds() + self._plan.latency, data))
        self.queued += len(data)
        if self.queued > HIGH_WATER and not self._sourcePaused and self.source is not None:
            self._sourcePaused = True
            self.source.pauseProducing()
        self.pump()

    def finish(self) -> None:
        """
        The source closed: close the sink once the queue is written.
        """
        self.sourceDone = True
        self.pump()

    def halt(self) -> None:
        """
        Forward nothing more, ever.
        """
        self.halted = True
        self._queue.clear()
        self.queued = 0
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, delay: float) -> None:
        if self._call is None or not self._call.active():
            self._call = self._clock.callLater(max(delay, 0.0), self._scheduled)

    def _scheduled(self) -> None:
        self._call = None
        self.pump()

    def pump(self) -> None:
        plan = self._plan
        while self._queue and not self.halted and not self._sinkPaused and self.sink is not None:
            now = self._clock.seconds()
            due, data = self._queue[0]
            if due > now:
                self._schedule(due - now)
                return
            n = len(data)
            if plan.bandwidth is not None:
                self._tokens = min(
                    float(plan.burstBytes),
                    self._tokens + (now - self._lastRefill) * plan.bandwidth,
                )
                self._lastRefill = now
                n = min(n, int(self._tokens))
                if n <= 0:
                    want = min(len(data), plan.burstBytes)
                    self._schedule((want - self._tokens) / plan.bandwidth)
                    return
                self._tokens -= n
            if self.budget is not None and n >= self.budget:
                n = self.budget
                self._write(data, n)
                self._connection.fault()
                return
            self._write(data, n)
        if not self.halted and self._sourcePaused and self.queued < LOW_WATER:
            self._sourcePaused = False
            if self.source is not None and not self._connection.stalled:
                self.source.resumeProducing()
        if not self._queue and self.sourceDone and not self.halted and self.sink is not None:
            self.halt()
            self._connection.closeSide(self.sink)

    def _write(self, data: bytes, n: int) -> None:
        if n < len(data):
            self._queue[0] = (self._queue[0][0], data[n:])
        else:
            self._queue.popleft()
        self.queued -= n
        if n:
            self.sink.write(data[:n])
            self._onForward(n)
            if self.budget is not None:
                self.budget -= n


class ProxiedConnection:
    """
    One client connection and its connection to the server.

    @ivar index: the order in which it was accepted (0 first).
    @ivar fate: C{"cut"}, C{"reset"}, C{"stall"} or L{None}.
    @ivar threshold: client-to-server bytes before the fault.
    @ivar faulted: whether the fault happened.
    @ivar toServer: client-to-server bytes forwarded.
    @ivar toClient: server-to-client bytes forwarded.
    @ivar clientLost: fires when the client side is closed.
    @ivar serverLost: fires when the server side is closed (or failed to
        connect).
    """

    def __init__(
        self,
        proxy: FaultProxy,
        index: int,
        fate: str | None,
        threshold: int | None,
    ) -> None:
        self._proxy = proxy
        self.index = index
        self.fate = fate
        self.threshold = threshold
        self.faulted = False
        self.stalled = False
        self.toServer = 0
        self.toClient = 0
        self.client: Any = None
        self.server: Any = None
        self.clientLost: Deferred[None] = Deferred()
        self.serverLost: Deferred[None] = Deferred()
        stats = proxy.stats

        def up(n: int) -> None:
            self.toServer += n
            stats.bytesToServer += n

        def down(n: int) -> None:
            self.toClient += n
            stats.bytesToClient += n

        plan = proxy.plan
        self.upstream = _Pipe(self, proxy.clock, plan, up, threshold)
        self.downstream = _Pipe(self, proxy.clock, plan, down, None)

    def __repr__(self) -> str:
        return (
            f"<ProxiedConnection #{self.index} fate={self.fate} threshold={self.threshold}"
            f" faulted={self.faulted} toServer={self.toServer}>"
        )

    def fault(self) -> None:
        """
        The threshold was reached: do what the fate says.
        """
        if self.faulted:
            return
        self.faulted = True
        stats = self._proxy.stats
        self.upstream.halt()
        self.downstream.halt()
        if self.fate == STALL:
            stats.stalls += 1
            self.stalled = True
            # Stop reading the client: its send buffer fills up and it sees
            # a link that carries nothing, but is not closed. What the
            # server sends is read and dropped (so that the proxy notices
            # when the server closes its end; the client never hears of it).
            if self.client is not None:
                self.client.pauseProducing()
            return
        for transport in (self.client, self.server):
            if transport is None:
                continue
            transport.unregisterProducer()
            if self.fate == RESET:
                transport.abortConnection()
            else:
                transport.loseConnection()
        if self.fate == RESET:
            stats.resets += 1
        else:
            stats.cuts += 1

    def closeSide(self, transport: Any) -> None:
        """
        One direction ended cleanly: close the side it was writing to.
        """
        transport.unregisterProducer()
        transport.loseConnection()

    def clientConnectionLost(self) -> None:
        if not self.clientLost.called:
            self.clientLost.callback(None)
        if self.stalled:
            # A half-dead link: the server does not hear about it.
            return
        self.upstream.finish()

    def serverConnectionLost(self) -> None:
        if not self.serverLost.called:
            self.serverLost.callback(None)
        if self.stalled:
            return
        if self.server is None and self.client is not None:
            # Could not connect at all.
            self.client.loseConnection()
            return
        self.downstream.finish()

    def abort(self) -> None:
        """
        Drop both sides now (used when the proxy stops).
        """
        self.upstream.halt()
        self.downstream.halt()
        for transport in (self.client, self.server):
            if transport is not None:
                transport.abortConnection()


class _ServerSide(Protocol):
    def __init__(self, connection: ProxiedConnection) -> None:
        self._connection = connection

    def connectionMade(self) -> None:
        c = self._connection
        c.server = self.transport
        c.downstream.source = self.transport
        c.upstream.attach(self.transport)
        if c.client is not None and not c.stalled:
            c.client.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self._connection._proxy.stats.bytesFromServer += len(data)
        self._connection.downstream.received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._connection.serverConnectionLost()


class _ServerFactory(ClientFactory):
    def __init__(self, connection: ProxiedConnection) -> None:
        self._connection = connection

    def buildProtocol(self, addr: Any) -> Protocol:
        return _ServerSide(self._connection)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self._connection.serverConnectionLost()


class _ClientSide(Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy
        self._connection: ProxiedConnection | None = None

    def connectionMade(self) -> None:
        self._connection = c = self._proxy._newConnection()
        c.client = self.transport
        c.upstream.source = self.transport
        c.downstream.attach(self.transport)
        # Read nothing until the server side is there.
        cast(IPushProducer, self.transport).pauseProducing()
        host, port = self._proxy.target
        self._proxy.reactor.connectTCP(host, port, _ServerFactory(c), timeout=30)

    def dataReceived(self, data: bytes) -> None:
        assert self._connection is not None
        self._proxy.stats.bytesFromClient += len(data)
        self._connection.upstream.received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._connection is not None:
            self._connection.clientConnectionLost()


class _ProxyFactory(ServerFactory):
    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy

    def buildProtocol(self, addr: Any) -> Protocol:
        return _ClientSide(self._proxy)


class FaultProxy:
    """
    A TCP proxy from a loopback port to C{target}, with faults per L{plan}.

    @ivar plan: the L{FaultPlan} for new connections (change it with
        L{setPlan} at any time).
    @ivar stats: L{ProxyStats} over all connections.
    @ivar connections: every L{ProxiedConnection}, in order.
    @ivar port: the listening port number, after L{listen}.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        target: tuple[str, int],
        plan: FaultPlan = FaultPlan(),
        seed: int = 0,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param reactor: accepts and makes the TCP connections.
        @param clock: times latency and the bandwidth cap (the reactor by
            default; a L{twisted.internet.task.Clock} in tests).
        @param seed: seeds the fates of connections.
        """
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self.target = target
        self.plan = plan
        self.seed = seed
        self._rng = random.Random(seed)
        self.stats = ProxyStats()
        self.connections: list[ProxiedConnection] = []
        self._listening: Any = None
        self.port = 0

    def setPlan(self, plan: FaultPlan) -> None:
        """
        Use C{plan} for connections accepted from now on.
        """
        self.plan = plan

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> int:
        """
        Start listening.

        @return: the port number.
        """
        self._listening = self.reactor.listenTCP(port, _ProxyFactory(self), interface=interface)
        self.port = self._listening.getHost().port
        return self.port

    def url(self, path: str = "/") -> str:
        """
        C{http://127.0.0.1:port} + C{path}: the proxied URL.
        """
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    def _newConnection(self) -> ProxiedConnection:
        fate, threshold = self.plan.draw(self._rng)
        c = ProxiedConnection(self, len(self.connections), fate, threshold)
        self.connections.append(c)
        self.stats.connections += 1
        return c

    def stop(self) -> Deferred[Any]:
        """
        Stop listening and drop every connection (stalled ones included).

        @return: a L{Deferred} that fires when all are closed.
        """
        waits: list[Deferred[Any]] = []
        if self._listening is not None:
            waits.append(maybeDeferred(self._listening.stopListening))
            self._listening = None
        for c in self.connections:
            c.abort()
            if c.client is not None:
                waits.append(c.clientLost)
            if c.server is not None:
                waits.append(c.serverLost)
        return DeferredList(waits)


def _parseSize(text: str) -> int:
    from uploadsvc.client.cli import parseSize

    return parseSize(text)


def _parseRange(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    return (_parseSize(low), _parseSize(high if sep else low))


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run a fault proxy until interrupted; print the totals at the end.
    """
    from twisted.internet.task import react
    from twisted.python import usage

    from uploadsvc import commandline

    class Options(commandline.Options):
        synopsis = "Usage: python -m uploadsvc.testing.faultproxy --target HOST:PORT [options]"
        longdesc = (
            "A TCP proxy on 127.0.0.1 that makes a link bad on purpose: it cuts "
            "connections after a random number of client bytes, stalls them "
            "(stops forwarding without closing), resets them, adds latency and "
            "caps bandwidth. Each connection draws its fate from one random "
            "generator seeded with --seed, so a run can be replayed. It prints "
            "the bytes carried when it stops. Example: python -m "
            "uploadsvc.testing.faultproxy --target 127.0.0.1:8080 --port 9090 "
            "--cut 256K-4M --stall 0.1 --seed 7"
        )
        optParameters = [
            ["target", "t", None, "Where to forward to, HOST:PORT."],
            ["port", "p", 0, "Port to listen on (127.0.0.1; 0: any free one).", int],
            ["cut", None, None, "Fault each connection after this many client bytes, LOW-HIGH (e.g. 256K-4M)."],
            ["stall", None, 0.0, "Weight of stalls among faults.", float],
            ["reset", None, 0.0, "Weight of resets among faults.", float],
            ["clean-cut", None, 1.0, "Weight of clean cuts among faults.", float],
            ["probability", None, 1.0, "Chance that a connection is faulty.", float],
            ["latency", None, 0.0, "Seconds added in each direction.", float],
            ["bandwidth", None, None, "Bytes per second per direction (e.g. 1M).", _parseSize],
            ["seed", None, 0, "Random seed, for replay.", int],
        ]

        def postOptions(self) -> None:
            if not self["target"] or ":" not in self["target"]:
                raise usage.UsageError("--target HOST:PORT is required")

    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\n{e}\n")
        raise SystemExit(2)
    host, _, port = options["target"].rpartition(":")
    plan = FaultPlan(
        cutAfter=_parseRange(options["cut"]) if options["cut"] else None,
        cut=options["clean-cut"],
        reset=options["reset"],
        stall=options["stall"],
        probability=options["probability"],
        latency=options["latency"],
        bandwidth=options["bandwidth"],
    )

    def run(reactor: Any) -> Deferred[None]:
        proxy = FaultProxy(reactor, (host, int(port)), plan, seed=options["seed"])
        listening = proxy.listen(options["port"])
        print(f"fault proxy on 127.0.0.1:{listening} -> {host}:{port}, {plan}", flush=True)
        done: Deferred[None] = Deferred()

        def report() -> None:
            print(f"\n{proxy.stats}", flush=True)

        reactor.addSystemEventTrigger("before", "shutdown", report)
        return done

    react(run)


if __name__ == "__main__":
    main()
