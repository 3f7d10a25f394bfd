"""
When to try again: a pure retry schedule for the resuming client.

Exponential back-off with jitter, capped, and two ways to give up: a number
of consecutive failed attempts, or a time without progress. Both count from
the last time the server's offset moved forward, so a long upload over a link
that drops every few megabytes never gives up while it keeps advancing, and a
dead server is abandoned after a bounded wait.

Nothing here touches a clock or a reactor: callers pass the time and a
L{random.Random}, which makes the schedule reproducible in tests.
"""

from __future__ import annotations

import random

import attrs


@attrs.frozen
class RetryPolicy:
    """
    How the client backs off between attempts and when it gives up.

    The delay before retry number C{n} (1 for the first retry after a
    failure) is C{min(maxDelay, initialDelay * factor ** (n - 1))}, reduced
    by a random fraction of at most C{jitter} of itself ("equal jitter" when
    C{jitter} is 0.5), so that many clients cut off at once do not come back
    in lock step.

    @ivar initialDelay: seconds before the first retry.
    @ivar factor: growth of the delay per consecutive failure.
    @ivar maxDelay: the cap on one delay, in seconds.
    @ivar jitter: the fraction (0 to 1) of each delay that is randomised.
    @ivar maxAttempts: give up after this many consecutive failed attempts
        without progress; L{None} for no limit.
    @ivar giveUpAfter: give up when this many seconds passed since the last
        progress (or the start); L{None} for no limit.
    """

    initialDelay: float = 0.5
    factor: float = 2.0
    maxDelay: float = 30.0
    jitter: float = 0.5
    maxAttempts: int | None = 10
    giveUpAfter: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.initialDelay < 0 or self.maxDelay < 0:
            raise ValueError("delays must not be negative")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.maxAttempts is not None and self.maxAttempts < 1:
            raise ValueError("maxAttempts must be at least 1 (or None)")
        if self.giveUpAfter is not None and self.giveUpAfter < 0:
            raise ValueError("giveUpAfter must not be negative")

    def baseDelay(self, failures: int) -> float:
        """
        The delay before the next attempt after C{failures} consecutive
        failures, before jitter.

        @param failures: at least 1.
        """
        if failures < 1:
            raise ValueError("failures must be at least 1")
        # Compare exponents rather than computing a huge power.
        delay = self.initialDelay
        for _ in range(failures - 1):
            delay *= self.factor
            if delay >= self.maxDelay:
                return self.maxDelay
        return min(delay, self.maxDelay)

    def delay(self, failures: int, rng: random.Random) -> float:
        """
        The jittered delay before the next attempt after C{failures}
        consecutive failures.
        """
        base = self.baseDelay(failures)
        return base - base * self.jitter * rng.random()

    def shouldGiveUp(self, failures: int, secondsWithoutProgress: float) -> bool:
        """
        Whether to stop after C{failures} consecutive failures, the last
        progress having been C{secondsWithoutProgress} ago.
        """
        if self.maxAttempts is not None and failures >= self.maxAttempts:
            return True
        if self.giveUpAfter is not None and secondsWithoutProgress >= self.giveUpAfter:
            return True
        return False


@attrs.define
class RetryState:
    """
    The mutable retry bookkeeping of one file's upload.

    Whether a failed attempt moved the server's offset is only known after
    the next offset query, so the delay after a failure follows the failures
    counted so far, and the count starts over once the query shows
    progress: over a link that drops every few megabytes every wait is the
    initial one.

    @ivar policy: the schedule.
    @ivar failures: consecutive failures since the last progress.
    @ivar lastProgress: the time of the last progress (or of the start).
    """

    policy: RetryPolicy
    lastProgress: float
    failures: int = 0

    def progressed(self, now: float) -> None:
        """
        Record that the server's offset moved forward at C{now}: the next
        failure starts the schedule over.
        """
        self.failures = 0
        self.lastProgress = now

    def failed(self, now: float, rng: random.Random) -> float | None:
        """
        Record a failed attempt at C{now}.

        @return: the seconds to wait before the next attempt, or L{None}
            when the policy says to give up.
        """
        self.failures += 1
        if self.policy.shouldGiveUp(self.failures, now - self.lastProgress):
            return None
        return self.policy.delay(self.failures, rng)
