"""
L{uploadsvc.ops.hookrunner.Hooks}: blocking hooks turned into the client's
answer, notifications retried on a L{Clock} and never lost silently.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest, Busy, UploadError
from uploadsvc.ops.events import (
    CANCELLED,
    COMPLETED,
    CREATED,
    EXPIRED,
    HOOK_FAILED,
    RESUMED,
    Events,
    UploadEvent,
)
from uploadsvc.ops.hookrunner import FAILED, GAVE_UP, OK, REFUSED, Hooks, HookService
from uploadsvc.ops.hooks import (
    ALL_HOOKS,
    NOTIFICATIONS,
    HookFailed,
    HookRequest,
    HookUpload,
    Proceed,
    Refuse,
)
from uploadsvc.protocol.paths import UploadPath
from tests.support.hooktargets import FakeTarget

UPLOAD = HookUpload("a/b.bin", "p-1", protocol="put", total=10)
REQUEST = HookRequest("PUT", "/a/b.bin", {"content-length": ("10",)}, "127.0.0.1:1")


class BlockingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events()
        self.told: list[UploadEvent] = []
        self.events.subscribe(self.told.append)
        self.seen: list[tuple[str, str]] = []

    def hooks(self, *targets: FakeTarget, enabled: frozenset[str] = frozenset(ALL_HOOKS)) -> Hooks:
        hooks = Hooks(targets, enabled, self.clock)
        hooks.listenTo(self.events)
        hooks.observe(lambda hook, outcome: self.seen.append((hook, outcome)))
        return hooks

    def test_proceed(self) -> None:
        """pre-create that lets the upload go on keeps its destination; the hook got the event."""
        target = FakeTarget(Proceed())
        hooks = self.hooks(target)
        self.assertIsNone(self.successResultOf(hooks.preCreate(UPLOAD, REQUEST, "alice", "r1")))
        [(hook, document)] = target.calls
        self.assertEqual(hook, "pre-create")
        self.assertEqual(document["upload"]["path"], "a/b.bin")
        self.assertEqual(document["credential"], "alice")
        self.assertEqual(document["request"]["method"], "PUT")
        self.assertEqual(self.seen, [("pre-create", OK)])

    def test_changedDestination(self) -> None:
        """pre-create's path becomes a checked UploadPath under the mount prefix."""
        hooks = self.hooks(FakeTarget(Proceed("users/alice/b.bin")))
        chosen = self.successResultOf(hooks.preCreate(UPLOAD, REQUEST, prefix=b"/up"))
        self.assertEqual(chosen, UploadPath(("users", "alice", "b.bin"), b"/up"))
        self.assertEqual(chosen.location, b"/up/users/alice/b.bin")

    def test_badDestination(self) -> None:
        """A destination that breaks the path rules is a 400, never a write outside the root."""
        for bad in ["../etc/passwd", "/abs", "a/../../b", ".uploadsvc/lock", "a//b", "a\\b", ""]:
            hooks = self.hooks(FakeTarget(Proceed(bad) if bad else Proceed("a/\x00")))
            failure = self.failureResultOf(hooks.preCreate(UPLOAD, REQUEST), BadRequest)
            self.assertEqual(failure.value.status, 400, bad)
            self.assertIn("destination", failure.value.reason)

    def test_refused(self) -> None:
        """A refusal is the client's answer, with the hook's status and reason."""
        hooks = self.hooks(FakeTarget(Refuse(403, "over quota")))
        failure = self.failureResultOf(hooks.preCreate(UPLOAD, REQUEST), UploadError)
        self.assertEqual((failure.value.status, failure.value.reason), (403, "over quota"))
        self.assertEqual(self.seen, [("pre-create", REFUSED)])
        self.assertEqual(self.told, [])

    def test_failedIs503(self) -> None:
        """A failed hook is a 503 with Retry-After, counted and told as hook-failed."""
        hooks = self.hooks(FakeTarget(HookFailed("connection refused")))
        failure = self.failureResultOf(hooks.preFinish(UPLOAD, REQUEST, "alice"), Busy)
        self.assertEqual(failure.value.status, 503)
        self.assertIn(b"Retry-After", failure.value.headers)
        self.assertEqual(self.seen, [("pre-finish", FAILED)])
        self.assertEqual(hooks.counts[("pre-finish", FAILED)], 1)
        [event] = self.told
        self.assertEqual(event.kind, HOOK_FAILED)
        self.assertEqual(event.credential, "alice")
        self.assertEqual(
            event.detail, {"hook": "pre-finish", "error": "connection refused", "blocking": True}
        )

    def test_bugIs503(self) -> None:
        """A target that raises something unexpected fails closed too: 503, never a success."""
        hooks = self.hooks(FakeTarget(ZeroDivisionError("oops")))
        self.failureResultOf(hooks.preCreate(UPLOAD, REQUEST), Busy)

    def test_waits(self) -> None:
        """The upload waits for the hook's answer."""
        answer: Deferred[Any] = Deferred()
        hooks = self.hooks(FakeTarget(answer))
        d = hooks.preFinish(UPLOAD, REQUEST)
        self.assertNoResult(d)
        answer.callback(Proceed())
        self.assertIsNone(self.successResultOf(d))

    def test_targetsInOrder(self) -> None:
        """Several targets are asked in order; the second is told the first's destination."""
        first, second = FakeTarget(Proceed("x/one")), FakeTarget(Proceed())
        hooks = self.hooks(first, second)
        chosen = self.successResultOf(hooks.preCreate(UPLOAD, REQUEST))
        self.assertEqual(chosen, UploadPath(("x", "one")))
        self.assertEqual(second.calls[0][1]["upload"]["path"], "x/one")

    def test_firstRefusalStops(self) -> None:
        """A refusal by the first target leaves the second unasked."""
        first, second = FakeTarget(Refuse(400, "no")), FakeTarget()
        self.failureResultOf(self.hooks(first, second).preCreate(UPLOAD, REQUEST), UploadError)
        self.assertEqual(second.calls, [])

    def test_disabled(self) -> None:
        """A hook that is not enabled is never called."""
        target = FakeTarget(Refuse(403, "no"))
        hooks = self.hooks(target, enabled=frozenset({"pre-finish"}))
        self.assertIsNone(self.successResultOf(hooks.preCreate(UPLOAD, REQUEST)))
        self.assertEqual(target.calls, [])
        self.assertFalse(hooks.runs("pre-create"))
        self.assertFalse(Hooks([], frozenset(ALL_HOOKS), self.clock).runs("pre-finish"))


class NotificationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events()
        self.told: list[UploadEvent] = []
        self.events.subscribe(self.told.append)

    def hooks(self, *targets: FakeTarget, retries: int = 3) -> Hooks:
        hooks = Hooks(targets, frozenset(ALL_HOOKS), self.clock, retries=retries, backoff=1.0)
        hooks.listenTo(self.events)
        return hooks

    def emit(self, kind: str = COMPLETED) -> None:
        self.events.emit(
            UploadEvent(kind, "p-1", path="a/b.bin", protocol="put", offset=10, total=10,
                        requestId="r9", credential="alice")
        )

    def test_afterTheAnswer(self) -> None:
        """A notification starts on the next turn of the reactor, never inside emit."""
        target = FakeTarget()
        self.hooks(target)
        self.emit()
        self.assertEqual(target.calls, [])
        self.clock.advance(0)
        [(hook, document)] = target.calls
        self.assertEqual(hook, "post-finish")
        self.assertEqual(document["upload"]["offset"], 10)
        self.assertEqual(document["requestId"], "r9")
        self.assertEqual(document["credential"], "alice")
        self.assertIsNone(document["request"])
        self.assertEqual(document["detail"], {"event": "completed"})

    def test_mapping(self) -> None:
        """created, completed, cancelled and expired are told as the four post-* hooks; others not."""
        target = FakeTarget()
        self.hooks(target)
        for kind in (CREATED, COMPLETED, CANCELLED, EXPIRED, RESUMED, HOOK_FAILED):
            self.emit(kind)
        self.clock.advance(0)
        self.assertEqual(
            [hook for hook, _ in target.calls],
            ["post-create", "post-finish", "post-terminate", "post-expire"],
        )
        self.assertEqual(set(NOTIFICATIONS), {hook for hook, _ in target.calls})

    def test_neverBlocks(self) -> None:
        """A notification that never answers holds up nothing: emit returns at once."""
        self.hooks(FakeTarget(Deferred()))
        self.emit()
        self.clock.advance(0)  # nothing raised, nothing waited for

    def test_retriedWithBackoff(self) -> None:
        """A failed notification is tried again after 1, 2, then 4 seconds, and stops when delivered."""
        target = FakeTarget(HookFailed("down"), HookFailed("down"), Proceed())
        hooks = self.hooks(target)
        self.emit()
        self.clock.advance(0)
        self.assertEqual(len(target.calls), 1)
        self.clock.advance(0.999)
        self.assertEqual(len(target.calls), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(target.calls), 2)
        self.clock.advance(1.999)
        self.assertEqual(len(target.calls), 2)
        self.clock.advance(0.001)
        self.assertEqual(len(target.calls), 3)
        self.clock.advance(100)
        self.assertEqual(len(target.calls), 3)
        self.assertEqual(hooks.counts[("post-finish", FAILED)], 2)
        self.assertEqual(hooks.counts[("post-finish", OK)], 1)
        self.assertEqual(self.told[1:], [])  # only the completed event itself

    def test_givesUpLoudly(self) -> None:
        """After its last try a notification is logged, counted and told as hook-failed."""
        target = FakeTarget(*[HookFailed("connection refused")] * 4)
        hooks = self.hooks(target)
        self.emit()
        self.clock.advance(0)
        self.clock.pump([1, 2, 4])
        self.assertEqual(len(target.calls), 4)
        self.assertEqual(hooks.counts[("post-finish", GAVE_UP)], 1)
        failed = [e for e in self.told if e.kind == HOOK_FAILED]
        self.assertEqual(len(failed), 1)
        self.assertEqual(failed[0].path, "a/b.bin")
        self.assertEqual(
            failed[0].detail,
            {"hook": "post-finish", "error": "connection refused", "blocking": False},
        )
        errors = [e for e in self.flushLoggedErrors()]  # log.error lines are not failures
        self.assertEqual(errors, [])

    def test_bugRetriedAndLogged(self) -> None:
        """A target that raises something unexpected is logged with its traceback and retried."""
        target = FakeTarget(KeyError("x"), Proceed())
        hooks = self.hooks(target)
        self.emit()
        self.clock.advance(0)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(hooks.counts[("post-finish", OK)], 1)

    def test_stopGivesUpWaiting(self) -> None:
        """At shutdown a notification waiting for its next try is reported, not dropped."""
        target = FakeTarget(HookFailed("down"))
        hooks = self.hooks(target)
        service = HookService(hooks)
        service.startService()
        self.emit()
        self.clock.advance(0)
        self.successResultOf(service.stopService())
        failed = [e for e in self.told if e.kind == HOOK_FAILED]
        self.assertEqual(len(failed), 1)
        self.assertIn("stopped", failed[0].detail["error"])
        self.clock.advance(100)
        self.assertEqual(len(target.calls), 1)

    def test_stopWaitsForCalls(self) -> None:
        """Shutdown waits for a call under way."""
        answer: Deferred[Any] = Deferred()
        hooks = self.hooks(FakeTarget(answer))
        self.emit()
        self.clock.advance(0)
        stopped = hooks.stop()
        self.assertNoResult(stopped)
        answer.callback(Proceed())
        self.successResultOf(stopped)

    def test_unwritableEventReported(self) -> None:
        """An event that cannot be written as JSON is reported as not delivered, never dropped silently."""
        target = FakeTarget()
        hooks = self.hooks(target)
        self.events.emit(UploadEvent(COMPLETED, "p-1", path="a", detail={"metadata": 5}))
        self.clock.advance(0)
        self.assertEqual(target.calls, [])
        self.assertEqual(hooks.counts[("post-finish", GAVE_UP)], 1)
        self.assertEqual([e.kind for e in self.told][-1], HOOK_FAILED)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
