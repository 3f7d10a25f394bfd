"""
Waiting for a condition in trial tests that run on the real reactor.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.task import deferLater


async def waitUntil(predicate: Callable[[], bool], what: str, limit: int = 2000) -> None:
    """
    Poll C{predicate} every 10 ms, at most C{limit} times (bounded: a test
    never hangs on it), and fail naming C{what} if it never holds.
    """
    from twisted.internet import reactor

    for _ in range(limit):
        if predicate():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"timed out waiting until {what}")
