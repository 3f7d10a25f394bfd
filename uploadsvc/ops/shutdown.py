"""
Graceful shutdown on SIGTERM (docs/operating.md).

twistd stops the reactor on SIGTERM; before it does, the services'
C{stopService} run, and a L{Deferred} they return holds the reactor until
it fires. L{GracefulShutdown} is the service that owns the listeners, and
its stop is the drain:

 1. stop listening at once (new connections are refused), and close every
    connection that has no request under way;
 2. let the requests in flight go on, for up to C{--shutdown-timeout}
    seconds from the signal; each connection is closed as its last
    response is sent (C{Connection: close});
 3. at the deadline, end those left (their connections are aborted): each
    ends the way a client that went away ends, through the request's own
    end path, which fsyncs what it stored and records its metadata
    (L{uploadsvc.storage.staged.StagedFile.syncAndClose}); wait up to
    L{FINISH_MARGIN} seconds for those ends;

and only then do the other services stop (the disk pool last: see
C{uploadsvc.tap}). L{exitZeroOnTerm} makes twistd exit 0 after such a stop
rather than die by the signal again.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: Default seconds requests in flight may go on after SIGTERM.
DEFAULT_SHUTDOWN_TIMEOUT: float = 30
#: Seconds, after the deadline, that the requests ended then get to make
#: their bytes durable (an fsync of a slow disk) before the process exits
#: anyway.
FINISH_MARGIN = 10.0
#: Seconds between two looks at what is still in flight.
POLL = 0.05
#: Seconds the other services get to stop once the drain is over (a look
#: for takeovers or expiries queued behind a slow disk's writes is not
#: waited for longer: the process exits as it would after kill -9).
REST_WAIT = 1.5


def stopTimeout(shutdownTimeout: float) -> float:
    """
    Seconds a whole process may take to stop gracefully: the time given to
    requests in flight, the margin for their ends, and a few seconds for
    the process to exit. What a supervisor waits before it kills (the
    C{--workers} parent, systemd's C{TimeoutStopSec}).
    """
    return shutdownTimeout + FINISH_MARGIN + 5.0


class GracefulShutdown(service.MultiService):
    """
    The listening services (its children) and the drain that stopping them
    starts.

    @ivar site: the L{uploadsvc.web.limits.LimitedSite} that serves the
        listeners, which knows the requests in flight and their connections.
    @ivar busy: how many uploads this process writes now (their writers
        release after the end path ran).
    @ivar timeout: seconds requests in flight may go on after the stop
        begins.
    """

    def __init__(
        self,
        site: Any,
        busy: Callable[[], int],
        clock: IReactorTime,
        timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        finishMargin: float = FINISH_MARGIN,
    ) -> None:
        super().__init__()
        self.site = site
        self.busy = busy
        self.clock = clock
        self.timeout = timeout
        self.finishMargin = finishMargin
        self._call: IDelayedCall | None = None

    def stopService(self) -> Deferred:
        """
        Stop listening, then drain (see the module docstring); the result
        fires once nothing is in flight any more, or the margin after the
        deadline has passed.
        """
        deadline = self.clock.seconds() + self.timeout
        stopped = maybeDeferred(super().stopService)  # the listeners
        self.site.drain()
        inFlight = self.site.inFlight
        if inFlight or self.busy():
            log.info(
                "stopped listening; waiting up to {timeout} s for {count} requests in flight",
                timeout=self.timeout, count=inFlight,
            )
        done: Deferred = Deferred()
        self._waitIdle(deadline, done)
        return stopped.addCallback(lambda _: done)

    def _idle(self) -> bool:
        return not self.site.inFlight and not self.busy()

    def _waitIdle(self, deadline: float, done: Deferred) -> None:
        self._call = None
        if self._idle():
            self.site.closeAll()  # what is left has no request under way
            done.callback(None)
        elif self.clock.seconds() >= deadline:
            log.warn(
                "ending {count} requests still in flight after {timeout} s; they keep "
                "the bytes they stored",
                count=self.site.inFlight, timeout=self.timeout,
            )
            self.site.abortAll()
            self._waitEnded(self.clock.seconds() + self.finishMargin, done)
        else:
            self._call = self.clock.callLater(POLL, self._waitIdle, deadline, done)

    def _waitEnded(self, end: float, done: Deferred) -> None:
        self._call = None
        if self._idle():
            done.callback(None)
        elif self.clock.seconds() >= end:
            log.error(
                "{count} uploads did not finish their end within {margin} s of the "
                "deadline; exiting anyway (what they wrote may not be fsync'd)",
                count=self.busy(), margin=self.finishMargin,
            )
            done.callback(None)
        else:
            self._call = self.clock.callLater(POLL, self._waitEnded, end, done)


class StopsFirst(service.MultiService):
    """
    A L{MultiService} whose child L{first} stops, and is waited for, before
    the others stop: the drain of L{GracefulShutdown} needs the disk pool,
    the takeover watch and the store for as long as it runs.

    @ivar first: that child, or L{None}.
    @ivar clock: with a clock, the others are waited for L{REST_WAIT}
        seconds at most; without one, as long as they take.
    """

    first: service.IService | None = None
    clock: IReactorTime | None = None

    def stopService(self) -> Deferred:
        service.Service.stopService(self)
        first = self.first
        if first is not None and first.running:
            before = maybeDeferred(first.stopService)
            before.addErrback(lambda f: log.failure("the graceful stop failed", f))
        else:
            before = succeed(None)

        def rest(_: object) -> Deferred:
            others = [s for s in reversed(list(self)) if s is not first]
            stopped = DeferredList([maybeDeferred(s.stopService) for s in others])
            if self.clock is None:
                return stopped
            done: Deferred = Deferred()

            def giveUp() -> None:
                log.warn(
                    "services still stopping {wait} s after the requests ended (a look "
                    "queued behind a slow disk): exiting without them",
                    wait=REST_WAIT,
                )
                done.callback(None)

            late = self.clock.callLater(REST_WAIT, giveUp)

            def over(result: object) -> None:
                if late.active():
                    late.cancel()
                    done.callback(None)

            stopped.addBoth(over)
            return done

        return before.addCallback(rest)


def exitZeroOnTerm(reactor: Any) -> None:
    """
    Handle SIGTERM as twistd does (stop the reactor, so that the services'
    graceful stop runs) but without asking twistd to end by the signal
    again afterwards: a graceful stop exits 0. A second SIGTERM while
    stopping is logged and changes nothing.

    Call it once the reactor runs (twistd installs its own handler as the
    reactor starts).
    """
    stopping: list[bool] = []

    def stop() -> None:
        if stopping:
            log.info("SIGTERM again: already stopping gracefully")
            return
        stopping.append(True)
        log.info("Received SIGTERM, stopping gracefully.")
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))


def isRealReactor(reactor: Any) -> bool:
    """
    Whether C{reactor} is one of Twisted's own (not a test's memory
    reactor): only then are process-wide signal handlers installed.
    """
    return reactor.__class__.__module__.startswith("twisted.internet.") and not (
        reactor.__class__.__module__.startswith("twisted.internet.testing")
    )
