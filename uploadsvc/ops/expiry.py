"""
Expiry: a timer that removes incomplete uploads which received no byte for
C{--expire-after} (docs/operating.md).

Every process serving a root runs one, on its own clock and in its disk
pool. They need no coordination: L{IUploadStore.expire} tries the upload's
writer lock (never waits for it), reads the upload's age again under it,
and tells C{True} to the one caller that removed the staged bytes, so an
upload is expired once, is never removed under a writer, and a writer that
appended after the listing keeps it. Only the caller told C{True} emits the
C{expired} event, so counts, hooks and the log (whose line is the event's,
L{uploadsvc.ops.logs.logEvent}) see each expiry once across processes and
hosts.

The rule for when an upload expires is L{uploadsvc.protocol.expiry}, shared
with the answers that report the time left.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from uploadsvc.errors import StorageFault
from uploadsvc.ops.events import EXPIRED, Events, UploadEvent
from uploadsvc.protocol.expiry import expiresAt
from uploadsvc.storage.interfaces import Incomplete

log = Logger()

#: Bounds of the time between two looks (see L{lookInterval}).
MIN_INTERVAL = 0.1
MAX_INTERVAL = 60.0


def lookInterval(expireAfter: float) -> float:
    """
    Seconds between two looks for expired uploads: a tenth of the expiry
    time (an upload then stays at most 10% longer than promised), at least
    L{MIN_INTERVAL} and at most L{MAX_INTERVAL} (a listing of the staging
    folders a minute is nothing beside the uploads themselves).
    """
    return min(max(expireAfter / 10.0, MIN_INTERVAL), MAX_INTERVAL)


def expiredEvent(entry: Incomplete, idle: float) -> UploadEvent:
    """
    The lifecycle event of the expiry of C{entry}, idle for C{idle} seconds.
    """
    return UploadEvent(
        kind=EXPIRED,
        key=entry.key,
        path=entry.path,
        uploadId=entry.uploadId.value if entry.uploadId is not None else None,
        offset=entry.offset,
        total=entry.total,
        detail={"idleSeconds": round(idle, 3)},
    )


class ExpiryService(service.Service):
    """
    Looks for expired uploads every L{lookInterval} seconds and removes
    them, one store call at a time in the disk pool (the uploads being
    written share that pool).

    @ivar expired: how many uploads this process expired.
    """

    def __init__(
        self,
        store: Any,
        runner: Any,
        clock: IReactorTime,
        expireAfter: float,
        events: Events,
        interval: float | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """
        @param store: the L{IUploadStore}.
        @param runner: runs blocking calls in the disk pool (L{ThreadRunner}).
        @param clock: what schedules the looks and tells the time the
            uploads' ages are measured against.
        @param expireAfter: seconds without a byte before an incomplete
            upload is removed (more than 0).
        @param events: where the C{expired} events go.
        @param interval: seconds between looks (default L{lookInterval}).
        @param jitter: a number in [0, 1): the first look waits that share
            of an interval, so that processes started together do not look
            in step.
        """
        if expireAfter <= 0:
            raise ValueError("expiry needs a time of more than 0 seconds")
        self.store = store
        self.runner = runner
        self.clock = clock
        self.expireAfter = expireAfter
        self.events = events
        self.interval = lookInterval(expireAfter) if interval is None else interval
        self._jitter = jitter
        self._next: IDelayedCall | None = None
        self._pass: Deferred | None = None
        self._stopping = False
        self.expired = 0

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._schedule(self.interval * self._jitter())

    def stopService(self) -> Deferred | None:
        """
        Look no more; the look under way stops after the store call it is
        in (its result is the L{Deferred} returned).
        """
        super().stopService()
        self._stopping = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return self._pass

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._next = self.clock.callLater(delay, self._look)

    def _look(self) -> None:
        self._next = None
        self._pass = self.expireNow()

        def again(_: object) -> None:
            self._pass = None
            self._schedule(self.interval)

        self._pass.addErrback(
            lambda f: log.failure("looking for expired uploads failed", f)
        ).addCallback(again)

    def expireNow(self) -> Deferred:
        """
        Remove every upload that is expired now.

        @return: a L{Deferred} firing with the L{Incomplete}s this process
            removed.
        """
        return ensureDeferred(self._expireNow())

    async def _expireNow(self) -> list[Incomplete]:
        entries = await self.runner.run(self.store.listIncomplete)
        removed = []
        for entry in entries:
            if self._stopping:
                break  # the rest is for the next start
            now = self.clock.seconds()
            at = expiresAt(entry.touched, self.expireAfter)
            if at is None or at > now:
                continue
            # The store looks again under the upload's lock: it may have
            # received bytes, or been expired by another process, since.
            try:
                gone = await self.runner.run(self.store.expire, entry.key, self.expireAfter, now)
            except StorageFault as e:
                # (A link planted in this upload's state since the listing:
                # the others are still looked at.)
                log.warn(
                    "could not expire the incomplete upload {key}: {detail}",
                    key=entry.key, detail=e.detail,
                )
                continue
            if gone:
                removed.append(entry)
                self._report(entry, now - entry.touched)
        return removed

    def _report(self, entry: Incomplete, idle: float) -> None:
        # No log line here: the server logs every event (logEvent).
        self.expired += 1
        self.events.emit(expiredEvent(entry, idle))
