"""
L{uploadsvc.storage.statedir.readJSON} when another host replaces or
removes a metadata file between this host's open and its read: on a
GlusterFS mount the read then fails with C{ENOENT} or C{ESTALE} (seen in
the chaos run as an HTTP 500 on a status query, and as a failed expiry
pass). A local disk never fails so; the store's injected L{SystemCalls}
plays the other host.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from tests.support.staging import stageFully

from uploadsvc.errors import StorageUnavailable, UnsafeState
from uploadsvc.protocol.decisions import Stored
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage import statedir
from uploadsvc.storage.filestore import FileStore
from uploadsvc.storage.syscalls import SystemCalls


class OtherHost(SystemCalls):
    """
    Reads of state files as a FUSE mount answers them when another host
    acted between the open and the read: the first C{len(actions)} reads
    run the next action (the other host's change) and fail with C{error}.

    @ivar reads: how many reads were made.
    """

    def __init__(self, actions: list[Callable[[], object]], error: int = errno.ENOENT) -> None:
        self.actions = list(actions)
        self.error = error
        self.reads = 0

    def read(self, fd: int, size: int) -> bytes:
        self.reads += 1
        if self.actions:
            self.actions.pop(0)()
            raise OSError(self.error, os.strerror(self.error))
        return super().read(fd, size)


class ReadJSONRaceTests(SynchronousTestCase):
    """
    A metadata file that changes under a read is read again or reported
    missing, never an unhandled error.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.dirFD = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, self.dirFD)
        statedir.writeJSON(self.dirFD, "k.json", {"total": 5}, fsync=False)

    def test_replacedIsReadAgain(self) -> None:
        """
        A file replaced (rename over it) by another host after it was opened
        is read again: the new content is the answer.
        """
        def replace() -> None:
            statedir.writeJSON(self.dirFD, "k.json", {"total": 7}, fsync=False)

        system = OtherHost([replace], errno.ESTALE)
        self.assertEqual(statedir.readJSON(self.dirFD, "k.json", "k", system), {"total": 7})
        self.assertEqual(system.reads, 3)  # the failed read, then the new file and its end

    def test_removedIsMissing(self) -> None:
        """
        A file removed by another host after it was opened (the upload
        completed or expired there) is missing: L{None}.
        """
        system = OtherHost([lambda: os.unlink(os.path.join(self.root, "k.json"))])
        self.assertIsNone(statedir.readJSON(self.dirFD, "k.json", "k", system))

    def test_alwaysChangingIsUnavailable(self) -> None:
        """
        A file that changes under every try is refused with 503 and a short
        Retry-After (the client's next try will find it settled), not a 500.
        """
        def replace() -> None:
            statedir.writeJSON(self.dirFD, "k.json", {"total": 9}, fsync=False)

        system = OtherHost([replace] * 10)
        error = self.assertRaises(
            StorageUnavailable, statedir.readJSON, self.dirFD, "k.json", "k", system
        )
        self.assertEqual((error.status, error.headers[b"Retry-After"]), (503, b"1"))
        self.assertEqual(system.reads, statedir.READ_TRIES)

    def test_otherErrorsRaised(self) -> None:
        """
        Any other read error (a failing disk) is raised as it is.
        """
        system = OtherHost([lambda: None], errno.EIO)
        error = self.assertRaises(OSError, statedir.readJSON, self.dirFD, "k.json", "k", system)
        self.assertEqual(error.errno, errno.EIO)


class FileStoreRaceTests(SynchronousTestCase):
    """
    The file store reads metadata through its injected system calls.
    """

    def test_statusQueryWhileRewrittenElsewhere(self) -> None:
        """
        A status query whose upload's C{.json} another host replaces just as
        it is read (that host's request ended and recorded a new total)
        answers from the new C{.json}, instead of the chaos run's 500.
        """
        root = os.path.abspath(self.mktemp())
        path = parseRelativePath("a/b.bin")
        other = FileStore(root, fsync=False)
        self.addCleanup(other.close)
        stageFully(other, "a/b.bin", b"0123456789", total=20)
        key = other.keyFor(path)
        info = os.path.join(root, ".uploadsvc", "uploads", other._shardName(key), key + ".json")
        with open(info) as f:
            recorded = json.load(f)

        def rewriteElsewhere() -> None:
            with open(info + ".other", "w") as f:
                json.dump({**recorded, "total": 30}, f)
            os.replace(info + ".other", info)

        system = OtherHost([rewriteElsewhere], errno.ESTALE)
        store = FileStore(root, fsync=False, system=system)
        self.addCleanup(store.close)
        found = store.inspect(path, strict=True)
        self.assertEqual((found.offset, found.total, found.incomplete), (10, 30, True))
        self.assertEqual(system.reads, 3)  # the failed read, then the new file and its end


class Renaming(SystemCalls):
    """
    A GlusterFS rename by another host seen from this one: while it runs,
    the file has a second name (distribute's link at the new name); the
    rename ends during this host's first pause.

    @ivar pauses: the pauses asked for.
    """

    def __init__(self, extra: str, pausesBeforeEnd: int = 1) -> None:
        self.extra = extra
        self.pausesBeforeEnd = pausesBeforeEnd
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if len(self.pauses) == self.pausesBeforeEnd and os.path.exists(self.extra):
            os.unlink(self.extra)


class ExtraNameRaceTests(SynchronousTestCase):
    """
    A state file seen with two names for a moment (another host's rename
    under way on GlusterFS) is opened once the rename is over; one that
    keeps a second name (a planted hard link) is still refused.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.dirFD = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, self.dirFD)
        statedir.writeJSON(self.dirFD, "k.json", {"total": 5}, fsync=False)
        self.extra = os.path.join(self.root, "k.json.1234.tmp")
        os.link(os.path.join(self.root, "k.json"), self.extra)

    def test_renameUnderWay(self) -> None:
        """
        The file is read after a short pause, when it has one name again.
        """
        system = Renaming(self.extra)
        self.assertEqual(statedir.readJSON(self.dirFD, "k.json", "k", system), {"total": 5})
        self.assertEqual(len(system.pauses), 1)

    def test_dataFile(self) -> None:
        """
        The same holds for the staged data files the store opens.
        """
        system = Renaming(self.extra, pausesBeforeEnd=3)
        fd = statedir.openFile(self.dirFD, "k.json", os.O_RDWR | os.O_CREAT, "k", system=system)
        assert fd is not None
        os.close(fd)
        self.assertEqual(len(system.pauses), 3)

    def test_plantedLinkRefused(self) -> None:
        """
        A second name that stays is refused (500 unsafe-state) after a
        bounded number of pauses of well under a second in all.
        """
        system = Renaming(self.extra, pausesBeforeEnd=1000)
        error = self.assertRaises(
            UnsafeState, statedir.readJSON, self.dirFD, "k.json", "k", system
        )
        self.assertIn("has 2 names", error.detail)
        self.assertEqual(system.pauses, list(statedir.LINK_PAUSES))
        self.assertLess(sum(system.pauses), 1.0)


class CompletingElsewhere(SystemCalls):
    """
    The first fsync of a staged data file fails as on GlusterFS when
    another host completed the upload (renamed the data onto its
    destination and removed the C{.json}) after this host opened it.
    """

    def __init__(self, complete: Callable[[], object], error: int = errno.ENOENT) -> None:
        self.complete = complete
        self.error = error
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        if self.fsyncs == 1:
            self.complete()
            raise OSError(self.error, os.strerror(self.error))
        super().fsync(fd)


class InspectRaceTests(SynchronousTestCase):
    """
    A status query whose staged file vanishes as it is read asks again.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.path = parseRelativePath("a/b.bin")
        other = FileStore(self.root, fsync=False)
        self.addCleanup(other.close)
        stageFully(other, "a/b.bin", b"0123456789", total=20)
        key = other.keyFor(self.path)
        self.folder = os.path.join(self.root, ".uploadsvc", "uploads", other._shardName(key))
        self.key = key

    def completeElsewhere(self) -> None:
        os.unlink(os.path.join(self.folder, self.key + ".json"))
        os.makedirs(os.path.join(self.root, "a"), exist_ok=True)
        os.rename(os.path.join(self.folder, self.key + ".data"),
                  os.path.join(self.root, "a", "b.bin"))

    def test_completedElsewhere(self) -> None:
        """
        The upload completed on another host as this one read its offset:
        the answer is the complete file (the chaos run's HEAD got a 500,
        C{ENOENT} from C{lseek} of the vanished data file).
        """
        store = FileStore(self.root, fsync=True, system=CompletingElsewhere(self.completeElsewhere))
        self.addCleanup(store.close)
        self.assertEqual(store.inspect(self.path, strict=True), Stored(completeSize=10))

    def test_alwaysVanishing(self) -> None:
        """
        A staged file that vanishes under every try is a 503 with a short
        Retry-After.
        """
        class Vanishing(SystemCalls):
            def fsync(self, fd: int) -> None:
                raise OSError(errno.ESTALE, "Stale file handle")

        store = FileStore(self.root, fsync=True, system=Vanishing())
        self.addCleanup(store.close)
        error = self.assertRaises(StorageUnavailable, store.inspect, self.path)
        self.assertEqual((error.status, error.headers[b"Retry-After"]), (503, b"1"))
