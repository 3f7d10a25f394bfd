"""
Tests for L{uploadsvc.ops.expiry}: the timer that removes abandoned
uploads, on a L{Clock} with a L{MemoryStore}, and with L{FileStore}s
sharing one root as processes do.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.commandline import formatDuration, parseDuration
from uploadsvc.errors import NotFound
from uploadsvc.ops.events import EXPIRED, Events, UploadEvent
from uploadsvc.ops.expiry import MAX_INTERVAL, MIN_INTERVAL, ExpiryService, lookInterval
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.interfaces import uploadKey
from uploadsvc.storage.memory import MemoryStore
from uploadsvc.tap import Options, makeService
from uploadsvc.testing.runners import ImmediateRunner, ManualRunner


def append(stored: Stored) -> Plan:
    return Plan(False, stored.offset, 0, None, None)


def stage(store: Any, target: Any, data: bytes) -> Any:
    """
    Begin a request on C{target} and write C{data}; the staged upload stays
    open (its writer holds it).
    """
    _, _, staged = store.begin(target, append, {}, None)
    if data:
        staged.writeChunks([data])
    return staged


def write(store: Any, target: Any, data: bytes) -> None:
    """
    One request that writes C{data} and ends without completing.
    """
    stage(store, target, data).syncAndClose()


class Heard:
    """
    Collects the events an L{Events} emits.
    """

    def __init__(self, events: Events) -> None:
        self.events: list[UploadEvent] = []
        events.subscribe(self.events.append)

    def keys(self) -> list[str]:
        assert all(e.kind == EXPIRED for e in self.events)
        return sorted(e.key for e in self.events)


class LookIntervalTests(SynchronousTestCase):
    def test_tenth(self) -> None:
        """Looks come a tenth of the expiry time apart, within their bounds."""
        self.assertEqual(lookInterval(100), 10)
        self.assertEqual(lookInterval(2), 0.2)
        self.assertEqual(lookInterval(0.01), MIN_INTERVAL)
        self.assertEqual(lookInterval(86400), MAX_INTERVAL)

    def test_offRefused(self) -> None:
        """A service that would expire everything at once cannot be made."""
        self.assertRaises(
            ValueError, ExpiryService, MemoryStore(), ImmediateRunner(), Clock(), 0, Events()
        )


class MemoryExpiryTests(SynchronousTestCase):
    """
    L{ExpiryService} on a clock the test moves, with a L{MemoryStore} that
    dates changes on the same clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(now=self.clock.seconds)
        self.events = Events()
        self.heard = Heard(self.events)
        self.service = ExpiryService(
            self.store, ImmediateRunner(), self.clock, 60, self.events, jitter=lambda: 0.0
        )
        self.service.startService()
        self.addCleanup(self.stop)

    def stop(self) -> None:
        if self.service.running:
            self.service.stopService()

    def test_idleUploadsExpire(self) -> None:
        """
        Uploads that received no byte for the expiry time are removed, made
        ones (no byte at all) included; one that received bytes since is
        kept until it too is idle that long.
        """
        a, c = parseRelativePath("a.bin"), parseRelativePath("c.bin")
        write(self.store, a, b"abc")
        made = self.store.create(parseRelativePath("b.bin"))
        write(self.store, c, b"x")
        self.clock.advance(50)
        write(self.store, c, b"y")
        self.clock.advance(9)
        self.assertEqual(self.heard.events, [])
        self.clock.advance(1)  # 60 s since a and b last changed; looks every 6 s
        self.clock.advance(6)
        self.assertEqual(self.heard.keys(), sorted([uploadKey(a), uploadKey(made)]))
        self.assertEqual(self.store.inspect(a), Stored())
        self.assertRaises(NotFound, self.store.inspect, made)
        self.assertEqual(self.store.inspect(c).offset, 2)
        self.clock.advance(50)
        self.assertEqual(len(self.heard.events), 3)
        self.assertEqual(self.service.expired, 3)
        self.assertEqual(self.store.listIncomplete(), [])

    def test_eventFields(self) -> None:
        """The expired event names the upload, its destination, id, bytes and total."""
        made = self.store.create(parseRelativePath("d/id.bin"))
        self.store.record(made, 10, {})
        write(self.store, made, b"abcd")
        self.clock.advance(70)
        [event] = self.heard.events
        self.assertEqual(
            (event.kind, event.key, event.path, event.uploadId, event.offset, event.total),
            (EXPIRED, uploadKey(made), "d/id.bin", made.value, 4, 10),
        )
        self.assertGreaterEqual(event.detail["idleSeconds"], 60)

    def test_queryDoesNotKeepAlive(self) -> None:
        """A status query that records a total does not put expiry off."""
        path = parseRelativePath("q.bin")
        write(self.store, path, b"abc")
        self.clock.advance(30)
        self.store.record(path, 100, {})
        self.store.inspect(path)
        self.clock.advance(36)
        self.assertEqual(self.heard.keys(), [uploadKey(path)])

    def test_heldNeverExpires(self) -> None:
        """An upload a writer holds is kept however long it is idle, and expires once let go."""
        path = parseRelativePath("held.bin")
        staged = stage(self.store, path, b"abc")
        self.clock.advance(1000)
        self.assertEqual(self.heard.events, [])
        staged.syncAndClose()
        self.clock.advance(6)
        self.assertEqual(self.heard.keys(), [uploadKey(path)])

    def test_stopped(self) -> None:
        """A stopped service looks no more."""
        write(self.store, parseRelativePath("kept.bin"), b"abc")
        self.service.stopService()
        self.clock.advance(1000)
        self.assertEqual(self.heard.events, [])
        self.assertEqual(len(self.store.listIncomplete()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedLookLoggedAndRetried(self) -> None:
        """A look that fails is logged, and the next one still comes."""
        path = parseRelativePath("later.bin")
        write(self.store, path, b"abc")
        real = self.store.listIncomplete
        calls = []

        def failOnce() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise OSError("the disk went away")
            return real()

        self.store.listIncomplete = failOnce  # type: ignore[method-assign]
        self.clock.advance(60)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.heard.events, [])
        self.clock.advance(6)
        self.assertEqual(self.heard.keys(), [uploadKey(path)])


class ManualExpiryTests(SynchronousTestCase):
    """
    The steps of a look, one store call at a time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(now=self.clock.seconds)
        self.runner = ManualRunner()
        self.events = Events()
        self.heard = Heard(self.events)
        self.service = ExpiryService(
            self.store, self.runner, self.clock, 60, self.events, jitter=lambda: 0.5
        )

    def test_firstLookJittered(self) -> None:
        """The first look waits the jitter's share of an interval."""
        self.service.startService()
        self.clock.advance(2.9)
        self.assertEqual(self.runner.pending, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.runner.pending), 1)
        self.runner.completeAll()
        self.service.stopService()

    def test_bytesAfterListingKeep(self) -> None:
        """An upload that received bytes after the listing saw it old is kept."""
        path = parseRelativePath("late.bin")
        write(self.store, path, b"abc")
        self.service.startService()
        self.clock.advance(63)
        self.runner.complete()  # the listing: old enough
        write(self.store, path, b"de")
        self.runner.complete()  # the expiry looks again
        self.assertEqual(self.heard.events, [])
        self.assertEqual(self.store.inspect(path).offset, 5)
        self.service.stopService()

    def test_stopWaitsForTheCallUnderWay(self) -> None:
        """Stopping waits for the store call under way, then makes no other."""
        for name in ("a.bin", "b.bin"):
            write(self.store, parseRelativePath(name), b"abc")
        self.service.startService()
        self.clock.advance(63)
        self.runner.complete()  # the listing
        self.assertEqual(len(self.runner.pending), 1)  # the first expiry
        d = self.service.stopService()
        assert d is not None
        self.assertNoResult(d)
        self.runner.complete()
        self.successResultOf(d)
        self.assertEqual(self.runner.pending, [])
        self.assertEqual(len(self.heard.events), 1)
        self.assertEqual(len(self.store.listIncomplete()), 1)


def backdate(root: str, key: str, seconds: float) -> None:
    """
    Make upload C{key} under C{root} look C{seconds} older.
    """
    shard = "%02x" % (zlib.crc32(key.encode()) & 0xFF)
    folder = os.path.join(root, ".uploadsvc", "uploads", shard)
    for suffix in (".data", ".json"):
        name = os.path.join(folder, key + suffix)
        if os.path.exists(name):
            st = os.stat(name)
            os.utime(name, (st.st_atime - seconds, st.st_mtime - seconds))


class FileExpiryTests(SynchronousTestCase):
    """
    Expiry of uploads on disk, by several stores (processes) on one root.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.clock = Clock()
        self.clock.advance(time.time())

    def open(self) -> FileStore:
        store = FileStore(self.root, fsync=False)
        self.addCleanup(store.close)
        return store

    def test_expiresOnDisk(self) -> None:
        """An idle upload's data and metadata are removed; a recent one stays."""
        store = self.open()
        old, new = parseRelativePath("old.bin"), parseRelativePath("new.bin")
        write(store, old, b"abc")
        store.record(old, 10, {})
        write(store, new, b"abc")
        backdate(self.root, uploadKey(old), 120)
        events = Events()
        heard = Heard(events)
        service = ExpiryService(store, ImmediateRunner(), self.clock, 60, events)
        self.successResultOf(service.expireNow())
        self.assertEqual(heard.keys(), [uploadKey(old)])
        self.assertEqual(store.inspect(old), Stored())
        self.assertEqual(store.inspect(new).offset, 3)
        left = os.listdir(os.path.join(self.root, ".uploadsvc", "uploads"))
        names = [n for shard in left for n in os.listdir(os.path.join(self.root, ".uploadsvc", "uploads", shard))]
        self.assertEqual(sorted(names), [uploadKey(new) + ".data", uploadKey(new) + ".json"])

    def test_plantedLinkLeftAlone(self) -> None:
        """
        A C{.json} with a second name (a planted hard link) is left alone
        and said once; every other idle upload still expires.
        """
        store = self.open()
        planted, idle = parseRelativePath("planted.bin"), parseRelativePath("idle.bin")
        for path in (planted, idle):
            write(store, path, b"abc")
            store.record(path, 10, {})
            backdate(self.root, uploadKey(path), 120)
        key = uploadKey(planted)
        shard = os.path.dirname(os.path.join(self.root, store._where(key, ".json")))
        outside = self.mktemp()
        os.link(os.path.join(shard, key + ".json"), outside)
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if "leaving the incomplete upload" in event.get("log_format", ""):
                warnings.append(event["key"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        events = Events()
        heard = Heard(events)
        service = ExpiryService(store, ImmediateRunner(), self.clock, 60, events)
        self.successResultOf(service.expireNow())
        self.successResultOf(service.expireNow())
        self.assertEqual(heard.keys(), [uploadKey(idle)])
        self.assertEqual(warnings, [key])
        self.assertTrue(os.path.exists(os.path.join(shard, key + ".data")))
        self.assertEqual(os.stat(outside).st_nlink, 2)  # neither name removed

    def test_unsafeOnExpiryNextLooked(self) -> None:
        """
        An upload whose state turns unsafe between the listing and its
        expiry is left, said in one line, and the next one still expires.
        """
        from uploadsvc.errors import UnsafeState

        store = self.open()
        first, second = parseRelativePath("a1.bin"), parseRelativePath("a2.bin")
        for path in (first, second):
            write(store, path, b"abc")
            backdate(self.root, uploadKey(path), 120)
        expire = store.expire

        def unsafeFirst(key: str, *args: Any) -> bool:
            if key == uploadKey(first):
                raise UnsafeState("planted")
            return expire(key, *args)

        self.patch(store, "expire", unsafeFirst)
        events = Events()
        heard = Heard(events)
        service = ExpiryService(store, ImmediateRunner(), self.clock, 60, events)
        self.successResultOf(service.expireNow())
        self.assertEqual(heard.keys(), [uploadKey(second)])

    def test_heldByAnotherProcess(self) -> None:
        """An upload another store (process) is writing is not expired."""
        mine, other = self.open(), self.open()
        path = parseRelativePath("busy.bin")
        staged = stage(other, path, b"abc")
        self.addCleanup(staged.close)
        backdate(self.root, uploadKey(path), 1000)
        events = Events()
        heard = Heard(events)
        service = ExpiryService(mine, ImmediateRunner(), self.clock, 60, events)
        self.assertEqual(self.successResultOf(service.expireNow()), [])
        self.assertEqual(heard.events, [])
        staged.syncAndClose()
        backdate(self.root, uploadKey(path), 1000)
        self.assertEqual(len(self.successResultOf(service.expireNow())), 1)

    def test_twoServicesInterleaved(self) -> None:
        """Two processes that list the same old uploads expire each one once between them."""
        first, second = self.open(), self.open()
        keys = []
        for n in range(5):
            path = parseRelativePath(f"u{n}.bin")
            write(first, path, b"abc")
            backdate(self.root, uploadKey(path), 1000)
            keys.append(uploadKey(path))
        events = Events()
        heard = Heard(events)
        runners = [ManualRunner(), ManualRunner()]
        services = [
            ExpiryService(store, runner, self.clock, 60, events)
            for store, runner in zip((first, second), runners)
        ]
        passes = [service.expireNow() for service in services]
        for runner in runners:
            runner.complete()  # both list all five
        while any(r.pending for r in runners):
            for runner in runners:
                if runner.pending:
                    runner.complete()
        done = [self.successResultOf(d) for d in passes]
        self.assertEqual(sum(len(d) for d in done), 5)
        self.assertEqual(heard.keys(), sorted(keys))
        self.assertEqual(first.listIncomplete(), [])

    def test_concurrentExpiriesEachOnce(self) -> None:
        """Stores expiring the same uploads from several threads at once remove each once."""
        stores = [self.open() for _ in range(4)]
        keys = []
        for n in range(40):
            path = parseRelativePath(f"c{n}.bin")
            write(stores[0], path, b"abc")
            backdate(self.root, uploadKey(path), 1000)
            keys.append(uploadKey(path))
        told: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(len(stores))

        def expireAll(store: FileStore) -> None:
            try:
                start.wait(timeout=30)
                for key in keys:
                    if store.expire(key, 60):
                        told.append(key)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=expireAll, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(told), sorted(keys))
        self.assertEqual(stores[1].listIncomplete(), [])


class DurationTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """Durations are seconds, or a number with s, m, h or d."""
        cases = {"0": 0, "90": 90, "1.5": 1.5, "90s": 90, "30m": 1800, "24h": 86400, "7d": 604800, "2S": 2}
        for text, seconds in cases.items():
            self.assertEqual(parseDuration(text), seconds, text)

    def test_bad(self) -> None:
        """Anything else is refused."""
        for text in ["", "-1", "1w", "h", "1.5.5", "1e3", " 1", "1 h", "inf", "nan"]:
            self.assertRaises(ValueError, parseDuration, text)

    def test_format(self) -> None:
        """A duration is written in the largest unit that writes it whole."""
        self.assertEqual(
            [formatDuration(s) for s in (86400, 3600 * 5, 90, 120, 2.5, 0)],
            ["1d", "5h", "90s", "2m", "2.5s", "0s"],
        )


class ExpiryOptionTests(SynchronousTestCase):
    """
    C{--expire-after} of C{twistd uploadsvc}.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_default(self) -> None:
        """Incomplete uploads expire after 24 h by default; --help says so."""
        self.assertEqual(self.parse()["expire-after"], 86400)
        usage = str(Options())
        self.assertIn("--expire-after", usage)
        self.assertIn("24h", usage)

    def test_values(self) -> None:
        """Units and plain seconds are taken; 0 is off."""
        for text, seconds in [("90s", 90), ("30m", 1800), ("2", 2), ("0", 0)]:
            self.assertEqual(self.parse("--expire-after", text)["expire-after"], seconds)

    def test_bad(self) -> None:
        """A value that is no duration is refused in one line naming the option."""
        e = self.assertRaises(UsageError, self.parse, "--expire-after", "soon")
        self.assertEqual(
            str(e),
            "--expire-after soon: not a duration; give seconds, or a number with s, m, h or d, e.g. 90s, 30m, 24h",
        )

    def test_workers(self) -> None:
        """A worker gets a --expire-after other than the default, and not the default."""
        self.assertIn("--expire-after=90.0", self.parse("--expire-after", "90s").workerArguments())
        self.assertFalse(
            [a for a in self.parse().workerArguments() if a.startswith("--expire-after")]
        )

    def services(self, *argv: str) -> list[ExpiryService]:
        reactor = MemoryReactorClock()
        top = makeService(self.parse("--root", self.mktemp(), *argv), reactor)
        return [s for s in top if isinstance(s, ExpiryService)]

    def test_service(self) -> None:
        """The server runs an expiry service with the option's time, and none when it is 0."""
        [service] = self.services("--expire-after", "10m")
        self.assertEqual((service.expireAfter, service.interval), (600, 60))
        self.assertEqual(self.services("--expire-after", "0"), [])

    def test_oneLogLinePerExpiry(self) -> None:
        """
        As makeService wires it, each expired upload is one line of the
        operator's log: its expired event's (not a line of its own besides).
        """
        reactor = MemoryReactorClock()
        top = makeService(self.parse("--root", self.mktemp(), "--expire-after", "10s"), reactor)
        [service] = [s for s in top if isinstance(s, ExpiryService)]
        service.runner = ImmediateRunner()  # the disk pool is not started here
        write(service.store, parseRelativePath("once.bin"), b"abc")
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        reactor.advance(time.time() + 20)
        self.assertEqual(len(self.successResultOf(service.expireNow())), 1)
        lines = [formatEvent(e) for e in logged if "once.bin" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("upload expired: once.bin offset 3 of -", lines[0])

    def test_supervisorHasNone(self) -> None:
        """With --workers only the workers expire (the parent has no store)."""
        self.assertEqual(self.services("--workers", "2"), [])
