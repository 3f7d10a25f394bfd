"""
Disk runners for tests: one that runs at once, one whose calls the test
completes by hand (to hold writes in flight and watch back-pressure).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, maybeDeferred


class ImmediateRunner:
    """
    Runs each call synchronously on the caller's thread.
    """

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        return maybeDeferred(f, *args)

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class ManualRunner:
    """
    Queues each call until the test runs it with L{complete}; calls back to
    the reactor thread run at once.

    @ivar pending: the calls not yet run, oldest first.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., object], tuple[object, ...], Deferred | None]] = []

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append((f, args, d))
        return d

    def callInThread(self, f: Callable[..., object], *args: object) -> None:
        self.pending.append((f, args, None))

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)  # the test's thread plays the reactor's

    def complete(self, count: int = 1) -> None:
        """
        Run the C{count} oldest pending calls (firing their Deferreds).
        """
        for _ in range(count):
            f, args, d = self.pending.pop(0)
            if d is None:
                f(*args)
            else:
                maybeDeferred(f, *args).chainDeferred(d)

    def completeAll(self) -> None:
        while self.pending:
            self.complete()
