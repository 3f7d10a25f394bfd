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


class ManualRunner:
    """
    Queues each call until the test runs it with L{complete}.

    @ivar pending: the calls not yet run, oldest first.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., object], tuple[object, ...], Deferred]] = []

    def run(self, f: Callable[..., object], *args: object) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append((f, args, d))
        return d

    def complete(self, count: int = 1) -> None:
        """
        Run the C{count} oldest pending calls and fire their Deferreds.
        """
        for _ in range(count):
            f, args, d = self.pending.pop(0)
            maybeDeferred(f, *args).chainDeferred(d)

    def completeAll(self) -> None:
        while self.pending:
            self.complete()
