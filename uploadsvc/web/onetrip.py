"""
A small plain PUT in one trip to the disk pool: its whole body is taken in
hand before the upload is begun, so that one blocking call begins it,
writes and hashes the body, and completes it (instead of one call to begin
and one to write and complete). S4's uploads of 64 KiB are such bodies.

The completion then runs inside a call that began while the request could
still be taken over, so the decision to complete and a newer request's
interrupt meet here, under a lock, on two threads: whichever comes first
wins (L{Claim}).
"""

from __future__ import annotations

import threading
from typing import Any

#: Bodies of at most this many bytes (by C{Content-Length}) may wait in
#: memory for their last byte before their upload is begun: a refusal that
#: needs the disk (a link, a complete file) then comes after the body, which
#: a client not asking for C{100 Continue} has sent anyway.
ONE_TRIP_BODY = 64 * 1024

_OPEN, _COMMITTED, _INTERRUPTED = range(3)


class Claim:
    """
    Who has a one-trip upload's end: its completion (the disk thread,
    L{commit}) or a newer request (the reactor thread, L{interrupt}).
    """

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _OPEN

    def commit(self) -> bool:
        """
        The disk thread is about to complete the upload: whether it may
        (no newer request asked first; none can take it over after).
        """
        with self._lock:
            if self._state == _OPEN:
                self._state = _COMMITTED
            return self._state == _COMMITTED

    def interrupt(self) -> bool:
        """
        A newer request asks for the upload: whether this request may be
        ended (its completion has not begun; it never will).
        """
        with self._lock:
            if self._state == _OPEN:
                self._state = _INTERRUPTED
            return self._state == _INTERRUPTED


def wantsOneTrip(request: Any, length: int | None, plainPut: bool, oneAlgorithm: bool) -> bool:
    """
    Whether a request's body may be taken in hand before its upload is
    begun: a plain PUT (no range, no C{Content-Digest}, no hook to ask, no
    C{Repr-Digest} but sha-256's) of a small body (L{ONE_TRIP_BODY}) whose
    client does not wait for C{100 Continue} (it wants the disk's refusal
    before it sends the body).
    """
    return (
        plainPut
        and oneAlgorithm
        and length is not None
        and 0 < length <= ONE_TRIP_BODY
        and not request.requestHeaders.hasHeader(b"expect")
    )
