"""
Where blocking file work runs: a bounded set of disk threads, injected.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: One call for a disk thread: the function, its arguments, and the
#: L{Deferred} its result goes to (L{None}: nobody waits for it).
_Job = Tuple[Callable[..., object], Tuple[object, ...], Optional[Deferred]]


class DiskThreads:
    """
    C{count} threads that run blocking calls from one queue, oldest first.

    Lighter than Twisted's C{ThreadPool}, which hands each call from a
    coordinator to a worker through two queues and a context: here a call
    is one C{put} on a C{queue.SimpleQueue} (written in C) and one C{get}
    (C{bench/pooltrip.py}: 0.46-0.62x the CPU of C{deferToThreadPool} per
    round trip). L{start} starts all C{count} threads: a thread started
    only when a call finds none idle can come too late, when a call that
    holds a thread waits for one queued behind it (a pump for its digest
    lane); an idle thread costs next to no memory (an idle server's RSS
    was 60.42 MiB with 8 disk threads, 60.36 with one). L{stop} lets
    every call queued before it run, then joins the threads.

    @param reactor: where results are sent back (C{callFromThread}).
    """

    def __init__(self, count: int, name: str, reactor: IReactorFromThreads) -> None:
        if count < 1:
            raise ValueError("need at least one disk thread")
        self.count = count
        self.name = name
        self._reactor = reactor
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def threads(self) -> list[threading.Thread]:
        """
        The threads started and not yet joined.
        """
        return list(self._threads)

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> list[threading.Thread]:
        """
        Run what is queued, then end and join the threads, waiting up to
        C{timeout} seconds in all (L{None}: as long as it takes).

        @return: the threads still running when the wait ended (daemon
            threads: they do not keep the process from exiting).
        """
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return [thread for thread in threads if thread.is_alive()]

    def put(self, job: _Job) -> None:
        self._queue.put(job)

    def _work(self) -> None:
        get, answer = self._queue.get, self._reactor.callFromThread
        while True:
            job = get()
            if job is None:
                return
            f, args, done = job
            del job
            try:
                result = f(*args)
            except BaseException:
                failure = Failure()
                if done is None:
                    log.failure("a call in a disk thread failed", failure)
                else:
                    answer(done.errback, failure)
            else:
                if done is not None:
                    answer(done.callback, result)
            # Nothing of a finished call is kept by an idle thread.
            f = args = done = result = failure = None  # type: ignore[assignment]


class ThreadRunner:
    """
    Runs blocking calls in C{threads} and answers on C{reactor}'s thread.
    """

    def __init__(self, reactor: IReactorFromThreads, threads: DiskThreads) -> None:
        self._reactor = reactor
        self._threads = threads

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        done: Deferred = Deferred()
        self._threads.put((f, args, done))
        return done

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        self._threads.put((f, args, None))

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self._reactor.callFromThread(f, *args)
