"""
One writer per upload within a process, and the newest writer wins.

A new write request for an upload whose earlier request is still open (often a
half-dead connection on a flaky link that the server has not noticed yet) asks
the holder to let go; the holder's request is ended, keeps what it stored, and
releases; then the newest waiter gets the upload. Across processes the
byte-range lock and takeover markers of L{uploadsvc.storage.filestore} do it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, MutableMapping

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from uploadsvc.errors import Conflict


class TakenOver(Conflict):
    """
    A newer request for the same upload arrived while this one waited.
    """


@attrs.define(eq=False)
class _Slot:
    interrupt: Callable[[], None]
    waiter: Deferred | None = None
    interrupted: bool = False


#: Hash states remembered at most (about 600 bytes each). Incomplete uploads
#: are bounded only by the disk; one whose state was dropped has its digest
#: computed from the staged file at completion, which is only slower.
MAX_HASH_STATES = 10_000


class _Newest(OrderedDict):  # type: ignore[type-arg]
    """
    A mapping that keeps only its C{limit} most recently set items.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class WriterRegistry:
    """
    Who writes each upload now, and the in-memory hash state kept between
    requests of this process.

    @ivar hashStates: upload key to C{(generation, offset, sha256 hasher)}:
        the hash of the first C{offset} bytes of the upload generation named
        in its C{.json} (see L{uploadsvc.storage.filestore}); at most
        C{maxHashStates} of them, the most recently kept, none kept longer
        ago than C{maxAge} seconds. Read and changed through
        L{takeHashState}, L{keepHashState} and L{forgetHashState}.
    """

    def __init__(
        self,
        maxHashStates: int = MAX_HASH_STATES,
        clock: IReactorTime | None = None,
        maxAge: float = 0.0,
    ) -> None:
        """
        @param clock: tells when a hash state was kept (needed for C{maxAge}).
        @param maxAge: seconds after which a kept hash state is dropped (the
            server's C{--expire-after}: the upload has expired by then, or
            ended on another server, which this process never hears of); 0
            or no C{clock}: kept until C{maxHashStates} newer ones push it out.
        """
        self._holders: dict[str, _Slot] = {}
        self._waiting: dict[str, _Slot] = {}
        self.hashStates: MutableMapping[str, tuple[str, int, Any]] = _Newest(maxHashStates)
        #: When each hash state was kept, oldest first (set in the same
        #: order as C{hashStates}, so the count bound drops the same keys).
        self._keptAt: MutableMapping[str, float] = _Newest(maxHashStates)
        self._clock = clock
        self._maxAge = maxAge if clock is not None else 0.0

    def takeHashState(self, key: str) -> tuple[str, int, Any] | None:
        """
        Hand the hash state kept for C{key} to the request that now writes
        it (a hasher is fed by one request at a time, so it is not kept
        meanwhile).
        """
        self._keptAt.pop(key, None)
        return self.hashStates.pop(key, None)

    def keepHashState(self, key: str, generation: str, offset: int, hasher: Any) -> None:
        """
        Keep the sha-256 of the first C{offset} bytes of C{key}'s upload
        generation C{generation}, for its next request: only once the
        C{.json} naming that generation is durable.
        """
        self.hashStates[key] = (generation, offset, hasher)
        if self._clock is None:
            return
        now = self._clock.seconds()
        self._keptAt[key] = now
        if self._maxAge > 0:
            while self._keptAt:
                old = next(iter(self._keptAt))
                if self._keptAt[old] >= now - self._maxAge:
                    break  # the rest were kept later
                del self._keptAt[old]
                self.hashStates.pop(old, None)

    def forgetHashState(self, key: str) -> None:
        """
        Drop the hash state of an upload that completed or was cancelled.
        """
        self._keptAt.pop(key, None)
        self.hashStates.pop(key, None)

    def interrupt(self, key: str) -> None:
        """
        Ask the holder of C{key}, if any, to let go (a writer in another
        process wants the upload).
        """
        holder = self._holders.get(key)
        if holder is not None and not holder.interrupted:
            holder.interrupted = True
            holder.interrupt()

    def interrupted(self, key: str) -> bool:
        """
        Whether the request holding C{key} was asked to let go (it must not
        begin a completion then: its client is being dropped).
        """
        holder = self._holders.get(key)
        return holder is not None and holder.interrupted

    def isHeld(self, key: str) -> bool:
        """
        Whether a request of this process writes C{key} now.
        """
        return key in self._holders

    def busy(self) -> int:
        """
        How many uploads are being written now.
        """
        return len(self._holders)

    def acquire(self, key: str, interrupt: Callable[[], None]) -> Deferred:
        """
        Become the writer of C{key}.

        @param interrupt: called (once) if a newer request wants the upload
            while this one holds it; it must end the request, which then
            calls the release function.
        @return: a L{Deferred} firing with a release function once this
            request holds the upload, or failing with L{TakenOver} if a newer
            request arrived first.
        """
        slot = _Slot(interrupt)
        holder = self._holders.get(key)
        if holder is None:
            self._holders[key] = slot
            return succeed(self._releaser(key, slot))
        older = self._waiting.pop(key, None)
        if older is not None and older.waiter is not None:
            older.waiter.errback(
                TakenOver("taken-over", "a newer request took over this upload")
            )

        def cancel(d: Deferred) -> None:
            if self._waiting.get(key) is slot:
                del self._waiting[key]

        waiter: Deferred = Deferred(cancel)
        slot.waiter = waiter
        self._waiting[key] = slot
        if not holder.interrupted:
            holder.interrupted = True
            holder.interrupt()  # may release at once, granting the waiter
        return waiter

    def _releaser(self, key: str, slot: _Slot) -> Callable[[], None]:
        def release() -> None:
            if self._holders.get(key) is not slot:
                return
            del self._holders[key]
            nxt = self._waiting.pop(key, None)
            if nxt is not None and nxt.waiter is not None:
                self._holders[key] = nxt
                waiter, nxt.waiter = nxt.waiter, None
                try:
                    waiter.callback(self._releaser(key, nxt))
                except CancelledError:
                    pass

        return release
