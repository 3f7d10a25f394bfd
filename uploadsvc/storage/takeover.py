"""
Taking an upload's two locks (L{uploadsvc.storage.locks}) in a file store.

The writer lock is never waited for here: L{takeWriterLock} tries once and
refuses. A request that wants an upload another process holds waits on the
reactor's clock between such tries (C{UploadApp._whenUnlocked}), leaving the
takeover marker C{.uploadsvc/takeover/<key>} that asks the holder to let go
(L{FileStore.askTakeover}), so no pool thread ever sleeps for a writer.

The state lock is different: it is held only while an upload's metadata is
read and rewritten, and waiting for it is a short bounded try-loop in the
pool (L{stateLocked}). Blocking: call from the disk pool.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from uploadsvc.errors import Busy
from uploadsvc.storage.locks import STATE, HeldLock, RegionLocks
from uploadsvc.storage.statedir import StateDir

#: The longest a request waits for another's state lock before 503.
STATE_WAIT = 5.0
#: The first pause between two tries of the state lock; each pause doubles.
STATE_POLL_FIRST = 0.0005
#: The longest pause between two tries of the state lock.
STATE_POLL_MAX = 0.01


def takeWriterLock(locks: RegionLocks, state: StateDir, key: str) -> HeldLock:
    """
    Take the upload's writer lock if nobody, in this process or another,
    holds it; never wait.

    @return: the lock, which only its own C{release} drops.
    @raise Busy: C{locked}, someone holds it (no marker is left: asking
        the holder to let go is the waiter's choice, see
        L{FileStore.askTakeover}).
    """
    lock = locks.tryLock(key)
    if lock is None:
        raise Busy("locked", "the upload is being written by another request")
    # A marker left by a writer that gave up would end this request; a
    # writer still waiting makes its marker again at its next try.
    try:
        state.dropMarker(key)
    except BaseException:  # (something planted at the marker's name)
        lock.release()
        raise
    return lock


def statePauses(limit: float) -> Iterator[float]:
    """
    The pauses between tries of a contended state lock: from
    L{STATE_POLL_FIRST}, doubling up to L{STATE_POLL_MAX}, adding up to
    C{limit} seconds (the last one cut to fit).
    """
    pause, left = STATE_POLL_FIRST, limit
    while left > 0:
        step = min(pause, left)
        yield step
        left -= step
        pause = min(pause * 2, STATE_POLL_MAX)


@contextmanager
def stateLocked(
    locks: RegionLocks,
    key: str,
    sleep: Callable[[float], None],
    limit: float = STATE_WAIT,
) -> Iterator[None]:
    """
    Hold the upload's state lock while its metadata is read and rewritten,
    or its files are started over, renamed or removed.

    Waiting for it is a bounded try-loop in the calling pool thread, not a
    blocking C{F_OFD_SETLKW}. Holders keep it for one metadata change: a few
    syscalls, at worst an fsync or two (milliseconds on a local disk, more
    on a loaded one or over NFS), never waiting for a client or another
    lock; and it is contended only when two requests change one upload's
    metadata at the same moment. The first tries come within a millisecond,
    so the common wait costs no more than the holder's own work. A blocking
    lock could not be bounded: nothing (not another descriptor, not a
    signal, which Python handles in the main thread) can end a
    C{F_OFD_SETLKW} of a pool thread, so a holder stuck in an fsync on a
    hung NFS server would hold every waiter's pool thread, and the uploads
    that share the pool, for as long; the Linux NFS client also serves a
    blocking lock by polling the server itself, from a second between
    tries. Here a waiter gives up after C{limit} seconds with 503.

    Not reentrant: a holder that asked again would wait for itself (and get
    503 after C{limit}).

    @param sleep: pauses the calling thread (the store's L{SystemCalls}).
    @param limit: seconds of pauses before giving up.
    @raise Busy: C{state-locked}, after C{limit} seconds.
    """
    pauses = statePauses(limit)
    while (lock := locks.tryLock(key, STATE)) is None:
        pause = next(pauses, None)
        if pause is None:
            raise Busy("state-locked", "the upload is being changed by another request")
        sleep(pause)
    try:
        yield
    finally:
        lock.release()
