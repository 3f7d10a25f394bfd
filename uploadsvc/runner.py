"""
Where blocking file work runs: a bounded thread pool, injected.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class ThreadRunner:
    """
    Runs blocking calls in C{pool} and answers on C{reactor}'s thread.
    """

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self._reactor = reactor
        self._pool = pool

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, f, *args)  # type: ignore[arg-type]

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        self._pool.callInThread(f, *args)

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self._reactor.callFromThread(f, *args)
