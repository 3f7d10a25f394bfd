"""
Taking an upload's two locks (L{uploadsvc.storage.locks}) in a file store,
and the takeover markers that ask another process's writer to let go.

A writer that finds the writer lock held elsewhere leaves the marker
C{.uploadsvc/takeover/<key>} (see L{FileStore.pendingTakeovers}) and looks
again until the holder lets go or C{lockWait} passes. The state lock is held
only for one small file write, so waiting for it is a short poll that asks
nobody to let go. Blocking: call from the disk pool.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from uploadsvc.errors import Busy
from uploadsvc.storage.locks import STATE, HeldLock, RegionLocks
from uploadsvc.storage.statedir import StateDir

#: How often a request waiting for another's writer lock looks again.
WRITER_POLL = 0.05
#: How often a request waiting for another's state lock looks again.
STATE_POLL = 0.005


def takeWriterLock(
    locks: RegionLocks, state: StateDir, key: str, wait: bool, lockWait: float
) -> HeldLock:
    """
    Take the upload's writer lock. When another process holds it, leave a
    takeover marker for it and wait up to C{lockWait} seconds for it to let
    go.

    @param wait: when false, refuse at once and leave no marker.
    @return: the lock, which only its own C{release} drops.
    @raise Busy: C{locked}, the holder did not let go in time.
    """
    lock = locks.tryLock(key)
    if lock is not None:
        # A marker left by a writer that gave up would end this request;
        # a writer still waiting makes its marker again within 50 ms.
        state.dropMarker(key)
        return lock
    if not wait:
        raise Busy("locked", "the upload is being written by another request")
    deadline = time.monotonic() + lockWait
    try:
        while True:
            # (Re)made each round: the holder may have just cleared it.
            state.touchMarker(key)
            time.sleep(WRITER_POLL)
            lock = locks.tryLock(key)
            if lock is not None:
                return lock
            if time.monotonic() >= deadline:
                raise Busy("locked", "the upload is being written by another process")
    finally:
        state.dropMarker(key)


@contextmanager
def stateLocked(locks: RegionLocks, key: str, lockWait: float) -> Iterator[None]:
    """
    Hold the upload's state lock while its metadata is read and rewritten,
    or its files are started over, renamed or removed.

    Not reentrant: a holder that asked again would wait for itself.

    @raise Busy: C{state-locked}, after C{lockWait} seconds.
    """
    deadline = time.monotonic() + lockWait
    while (lock := locks.tryLock(key, STATE)) is None:
        if time.monotonic() >= deadline:
            raise Busy("state-locked", "the upload is being changed by another request")
        time.sleep(STATE_POLL)
    try:
        yield
    finally:
        lock.release()
