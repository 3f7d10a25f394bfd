"""
Links and storage faults in L{uploadsvc.storage.filestore} and how the app
answers them (docs/protocol.md sections 1, 6 and 7; issue 8 items 3, 6, 7, 15).

A symbolic link, hard link or FIFO planted in the server's own folder is
refused (500, one line) and never followed; a link at a destination is no
complete upload; concurrent metadata writers never mix and a corrupt
C{.json} is no permanent 500; a full inode table is 507, a read-only disk
503, a removed root is noticed. Real files in temporary folders; the tests
that need a small or read-only file system mount one (as root).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
from typing import Any, Callable

from treq.testing import StubTreq
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_filestore import FileStoreTestsMixin, shardOf
from uploadsvc.errors import Busy, Conflict, Forbidden, UploadError
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.paths import parseRelativePath
from uploadsvc.storage import filestore
from uploadsvc.storage.filestore import STATE_DIR, FileStore
from uploadsvc.storage.safepath import renameNoReplace
from uploadsvc.testing.runners import ImmediateRunner
from uploadsvc.web.app import Config, UploadApp
from tests.support.stubapp import StubRequests


def mount(testCase: Any, *args: str) -> None:
    """
    Run C{mount args} (the last one is the mount point) and unmount in the
    test's cleanup; skip the test where this process may not mount.
    """
    problem = None
    if os.geteuid() != 0:
        problem = "mounting a file system needs root"
    else:
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            problem = f"cannot mount here: {result.stderr.strip()}"
    if problem is not None:
        if os.environ.get("CI"):
            raise AssertionError(problem + " (CI runs as root and must mount)")
        raise SkipTest(problem)
    testCase.addCleanup(subprocess.run, ["umount", "-l", args[-1]], check=True)


def smallTmpfs(testCase: Any, path: str, inodes: int) -> None:
    """
    Mount a tmpfs with only C{inodes} inodes on C{path}.
    """
    os.makedirs(path, exist_ok=True)
    mount(testCase, "-t", "tmpfs", "-o", f"size=8m,nr_inodes={inodes}", "tmpfs", path)


def fillInodes(folder: str) -> int:
    """
    Make empty files in C{folder} until the file system has no inode left
    (at most 10,000); return how many were made.
    """
    for n in range(10_000):
        try:
            os.close(os.open(os.path.join(folder, f"filler-{n}"), os.O_CREAT | os.O_WRONLY))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return n
    raise AssertionError("the file system never ran out of inodes")


def failingDisk(testCase: Any, path: str) -> Callable[[], None]:
    """
    Mount a small ext4 image on C{path} that the kernel makes read-only on
    its first error, as it does a failing disk (C{errors=remount-ro}), even
    with files open for writing.

    @return: the function that makes the error happen.
    """
    image = path + ".img"
    os.makedirs(os.path.dirname(image), exist_ok=True)
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", image], capture_output=True, text=True)
    if made.returncode != 0:
        raise SkipTest(f"cannot make an ext4 image: {made.stderr.strip()}")
    os.makedirs(path)
    mount(testCase, "-o", "loop,errors=remount-ro", image, path)
    source = subprocess.run(
        ["findmnt", "-no", "SOURCE", path], capture_output=True, text=True, check=True
    ).stdout.strip()
    trigger = f"/sys/fs/ext4/{os.path.basename(source)}/trigger_fs_error"
    if not os.path.exists(trigger):
        raise SkipTest(f"no {trigger}")

    def fail() -> None:
        with open(trigger, "w") as f:
            f.write("uploadsvc test: make the disk read-only\n")

    return fail


def appendPlan(stored: Stored) -> Plan:
    return Plan(False, stored.offset, 0, None, None)


def exhaustDescriptors(testCase: Any) -> Callable[[], None]:
    """
    Leave this process no free file descriptor: the soft limit is lowered
    to just above the highest descriptor in use and the gaps below it are
    filled. Undone by the returned function, or when C{testCase} cleans up.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 1, hard))
    held: list[int] = []

    def release() -> None:
        while held:
            os.close(held.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    testCase.addCleanup(release)
    try:
        for _ in range(100000):
            held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as e:
        if e.errno != errno.EMFILE:
            release()
            raise
    return release


class _Planted(FileStoreTestsMixin):
    """
    Helpers to plant things in the state folder, and a file outside the
    root that they point at.
    """

    def setUp(self) -> None:
        super().setUp()
        self.secret = os.path.join(self.outside, "secret")
        with open(self.secret, "wb") as f:
            f.write(b"outside-secret")

    def plantLink(self, at: str, target: str | None = None) -> None:
        os.makedirs(os.path.dirname(at), exist_ok=True)
        os.symlink(self.secret if target is None else target, at)

    def assertOutsideUntouched(self) -> None:
        t: Any = self
        t.assertEqual(self.outsideEntries(), ["secret"])
        t.assertEqual(self.readFile(self.secret), b"outside-secret")

    def assertUnsafe(self, f: Any, *args: Any) -> UploadError:
        """
        Assert that C{f(*args)} is refused as unsafe state: a 500 with a
        one-line reason.
        """
        t: Any = self
        error: UploadError = t.assertRaises(UploadError, f, *args)
        t.assertEqual((error.status, error.code), (500, "unsafe-state"), repr(error))
        t.assertNotIn("\n", error.reason)
        return error


class StagingLinkTests(_Planted, SynchronousTestCase):
    """
    Nothing planted under C{.uploadsvc} is followed (issue 8 item 6).
    """

    def test_refusedCancelKeepsMetadata(self) -> None:
        """
        A cancel refused because the data file cannot be removed (here: it
        has a second name) leaves the upload's metadata whole: its total is
        still known.
        """
        path = parseRelativePath("keep.bin")
        self.openUpload(path, total=10).syncAndClose()
        os.link(self.dataFile(path), os.path.join(self.shardDir(path), "second-name"))
        self.assertUnsafe(self.store.cancel, path)
        self.assertEqual(self.readInfo(path)["total"], 10)

    def test_dataLinkNotRead(self) -> None:
        """
        A link at an upload's data file is refused by C{inspect}: the size
        of the file it points at is not reported.
        """
        path = parseRelativePath("f.bin")
        self.plantLink(self.dataFile(path))
        self.assertUnsafe(self.store.inspect, path)

    def test_dataLinkNotAppended(self) -> None:
        """
        A write to an upload whose data file is a link is refused, and the
        file it points at is not appended to.
        """
        path = parseRelativePath("f.bin")
        self.plantLink(self.dataFile(path))
        self.assertUnsafe(self.store.begin, path, appendPlan, {}, None)
        self.assertOutsideUntouched()

    def test_dataLinkNotTruncated(self) -> None:
        """
        A write that starts the upload over does not truncate the file a
        planted link points at.
        """
        path = parseRelativePath("f.bin")
        self.plantLink(self.dataFile(path))
        self.assertUnsafe(
            self.store.begin, path, lambda s: Plan(True, 0, 0, None, None), {}, None
        )
        self.assertOutsideUntouched()

    def test_danglingDataLinkNotCreated(self) -> None:
        """
        A dangling link at a data file does not make the file it names.
        """
        path = parseRelativePath("f.bin")
        made = os.path.join(self.outside, "made")
        self.plantLink(self.dataFile(path), made)
        self.assertUnsafe(self.store.begin, path, appendPlan, {}, None)
        self.assertFalse(os.path.lexists(made))

    def test_hardLinkedDataRefused(self) -> None:
        """
        A data file that is a hard link of a file elsewhere is refused: its
        content does not become the upload's.
        """
        path = parseRelativePath("f.bin")
        os.makedirs(self.shardDir(path))
        os.link(self.secret, self.dataFile(path))
        error = self.assertUnsafe(self.store.inspect, path)
        self.assertIn("hard link", getattr(error, "detail", ""))
        self.assertUnsafe(self.store.begin, path, appendPlan, {}, None)
        self.assertOutsideUntouched()

    def test_hardLinkMadeWhileStaging(self) -> None:
        """
        A hard link made to a staged file while it is written makes the
        next report of its offset a refusal.
        """
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        os.link(self.dataFile(path), os.path.join(self.outside, "copy"))
        self.assertUnsafe(staged.sync)

    def test_linkedShardRefused(self) -> None:
        """
        A linked C{uploads/<xx>} folder is refused: no staging lands where
        it points.
        """
        path = parseRelativePath("f.bin")
        os.symlink(self.outside, self.shardDir(path))
        self.assertUnsafe(self.store.begin, path, appendPlan, {}, None)
        self.assertUnsafe(self.store.inspect, path)
        self.assertOutsideUntouched()

    def test_dataSwappedForLinkBeforeCompletion(self) -> None:
        """
        A staged file swapped for a link before completion is not renamed
        into place: the destination does not become a link out of the root.
        """
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"payload"])
        os.rename(self.dataFile(path), self.dataFile(path) + ".moved")
        os.symlink(self.secret, self.dataFile(path))
        self.assertUnsafe(self.store.complete, path, staged, False)
        self.assertFalse(os.path.lexists(os.path.join(self.root, "f.bin")))
        self.assertOutsideUntouched()

    def test_infoLinkNotRead(self) -> None:
        """
        A C{.json} that is a link is not read as the upload's metadata.
        """
        path = parseRelativePath("f.bin")
        self.openUpload(path).syncAndClose()
        with open(self.secret, "w") as f:
            json.dump({"total": 3}, f)
        os.unlink(self.infoFile(path))
        os.symlink(self.secret, self.infoFile(path))
        self.assertUnsafe(self.store.inspect, path)

    def test_infoTempLinkNotFollowed(self) -> None:
        """
        A link planted at the temp name of an upload's C{.json} is not
        written through when its metadata is written.
        """
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path, total=10)
        staged.writeChunks([b"abc"])
        os.symlink(self.secret, self.infoFile(path) + ".tmp")
        staged.syncAndClose()
        self.assertOutsideUntouched()
        self.assertEqual(self.readInfo(path)["total"], 10)
        self.assertFalse(os.path.islink(self.infoFile(path)))

    def test_cancelRefusesDataLink(self) -> None:
        """
        Cancelling an upload whose data file is a link is refused; the link
        stays for the operator to see.
        """
        path = parseRelativePath("f.bin")
        self.plantLink(self.dataFile(path))
        self.assertUnsafe(self.store.cancel, path)
        self.assertTrue(os.path.islink(self.dataFile(path)))

    def test_takeoverMarkerLinkNotFollowed(self) -> None:
        """
        A dangling link at a takeover marker's name does not make the file
        it names when a writer waiting for another process asks it to let
        go.
        """
        path = parseRelativePath("f.bin")
        self.openUpload(path)
        made = os.path.join(self.outside, "made")
        marker = os.path.join(self.root, STATE_DIR, "takeover", FileStore.keyFor(path))
        self.plantLink(marker, made)
        other = self.makeStore()
        self.assertRaises(Busy, other.begin, path, appendPlan, {}, None)
        self.assertUnsafe(other.askTakeover, FileStore.keyFor(path))
        self.assertFalse(os.path.lexists(made))

    def test_linkedStateFolderRefused(self) -> None:
        """
        A store does not open on a root whose C{.uploadsvc} is a link: it
        makes nothing where the link points.
        """
        root = os.path.join(self.base, "root2")
        os.makedirs(root)
        os.symlink(self.outside, os.path.join(root, STATE_DIR))
        self.assertUnsafe(FileStore, root)
        self.assertOutsideUntouched()

    def test_danglingLockLinkRefused(self) -> None:
        """
        A store does not open when the C{lock} file is a dangling link, and
        does not make the file it names.
        """
        root = os.path.join(self.base, "root2")
        made = os.path.join(self.outside, "made")
        self.plantLink(os.path.join(root, STATE_DIR, "lock"), made)
        self.assertUnsafe(FileStore, root)
        self.assertFalse(os.path.lexists(made))


class MetadataTests(_Planted, SynchronousTestCase):
    """
    An upload's C{.json}: writers at once never mix, and a corrupt one is no
    permanent failure (issue 8 item 3, the file half).
    """

    def test_writersAtOnce(self) -> None:
        """
        Two metadata writes of one upload at the same time both succeed and
        leave a whole C{.json} (each writes a temp file of its own).
        """
        path = parseRelativePath("f.bin")
        self.openUpload(path, total=10).syncAndClose()
        key = FileStore.keyFor(path)
        realReplace = self.store.system.replace
        nested: list[str] = []

        def interleaved(src: str, dst: str, *a: Any, **kw: Any) -> None:
            if not nested:
                nested.append(src)
                self.store._writeInfo(key, {"path": "f.bin", "total": 10, "writer": 2})
            realReplace(src, dst, *a, **kw)

        self.patch(self.store.system, "replace", interleaved)
        self.store._writeInfo(key, {"path": "f.bin", "total": 10, "writer": 1})
        self.assertEqual(len(nested), 1)  # the second writer did run in between
        self.assertEqual(self.readInfo(path)["writer"], 1)
        self.assertEqual(self.uploadsEntries(), [key + ".data", key + ".json"])

    def test_corruptInfoIsNoMetadata(self) -> None:
        """
        A corrupt C{.json} reads as an upload of unknown total at its data
        file's size (logged), and the next write that ends incomplete
        replaces it.
        """
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path, total=10)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        with open(self.infoFile(path), "wb") as f:
            f.write(b'{"total": 1')
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.assertEqual(self.store.inspect(path), Stored(offset=3, incomplete=True))
        self.assertEqual(len([e for e in logged if "unreadable" in e.get("log_format", "")]), 1)
        again = self.openUpload(path, total=10)
        again.writeChunks([b"de"])
        self.assertEqual(again.syncAndClose(), 5)
        self.assertEqual(self.store.inspect(path), Stored(offset=5, total=10, incomplete=True))


class DestinationLinkTests(_Planted, SynchronousTestCase):
    """
    A link (or FIFO) at the destination is no complete upload, and a path
    through a linked folder is refused for every operation (issue 8 item 7).
    """

    def test_strictInspectRefusesLink(self) -> None:
        """
        For a status query a link at the destination is a 409, not a
        complete file; a write still sees it as an existing entry.
        """
        os.symlink(self.secret, os.path.join(self.root, "l.bin"))
        path = parseRelativePath("l.bin")
        error = self.assertRaises(Conflict, self.store.inspect, path, True, True)
        self.assertEqual(error.code, "is-link")
        self.assertIsNotNone(self.store.inspect(path).completeSize)

    def test_strictInspectRefusesFifo(self) -> None:
        """
        A FIFO at the destination is a 409 for a status query too.
        """
        os.mkfifo(os.path.join(self.root, "p"))
        error = self.assertRaises(Conflict, self.store.inspect, parseRelativePath("p"), True, True)
        self.assertEqual(error.code, "not-a-file")

    def test_strictInspectReportsStagedUpload(self) -> None:
        """
        An incomplete upload staged for a path that is now a link is still
        reported (it can be cancelled, or replace the link if allowed).
        """
        path = parseRelativePath("l.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        os.symlink(self.secret, os.path.join(self.root, "l.bin"))
        stored = self.store.inspect(path, True, True)
        self.assertEqual((stored.incomplete, stored.offset), (True, 3))

    def test_cancelThroughLinkedFolder(self) -> None:
        """
        Cancelling through a linked folder is a 403 like every other
        request, and the staged upload stays.
        """
        path = parseRelativePath("dir/f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"abc"])
        staged.syncAndClose()
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        self.assertRaises(Forbidden, self.store.cancel, path)
        self.assertEqual(self.readFile(self.dataFile(path)), b"abc")

    def test_hashCompleteFifo(self) -> None:
        """
        A retried final request on a FIFO is a 409, without waiting for a
        writer of the FIFO.
        """
        os.mkfifo(os.path.join(self.root, "p"))
        error = self.assertRaises(
            Conflict, self.store.hashComplete, parseRelativePath("p"), ["sha-256"]
        )
        self.assertEqual(error.code, "not-a-file")

    def test_deleteCompleteKeepsLink(self) -> None:
        """
        Deleting a complete file refuses a link at the path (409) and keeps
        it.
        """
        os.symlink(self.secret, os.path.join(self.root, "l.bin"))
        self.assertRaises(Conflict, self.store.deleteComplete, parseRelativePath("l.bin"))
        self.assertTrue(os.path.islink(os.path.join(self.root, "l.bin")))


class RootReplacedTests(_Planted, SynchronousTestCase):
    """
    A root removed while the server runs, and perhaps made again (issue 8
    item 15).
    """

    def replaceRoot(self) -> None:
        shutil.rmtree(self.root)
        os.makedirs(self.root)

    def test_recreatedRootUsed(self) -> None:
        """
        After the root was removed and made again, an upload completes in
        the new root (no restart), with a new state folder.
        """
        self.replaceRoot()
        path = parseRelativePath("d/f.bin")
        self.assertEqual(self.store.inspect(path), Stored())
        staged = self.openUpload(path)
        staged.writeChunks([b"new root"])
        self.assertFalse(self.store.complete(path, staged, False))
        self.assertEqual(self.readFile(self.root, "d", "f.bin"), b"new root")
        self.assertTrue(os.path.isdir(os.path.join(self.root, STATE_DIR, "uploads")))

    def test_missingRootRefused(self) -> None:
        """
        A root that is gone is a 503 with a reason, and the store does not
        make it again (it may be an unmounted disk).
        """
        shutil.rmtree(self.root)
        path = parseRelativePath("f.bin")
        for call in (
            lambda: self.store.inspect(path),
            lambda: self.store.begin(path, appendPlan, {}, None),
        ):
            error = self.assertRaises(UploadError, call)
            self.assertEqual((error.status, error.code), (503, "root-missing"))
        self.assertFalse(os.path.exists(self.root))

    def test_stagedUploadOfRemovedRoot(self) -> None:
        """
        An upload staged in a root that was then removed reports no offset
        (its bytes are gone) and completes nowhere, not in the new root.
        """
        path = parseRelativePath("f.bin")
        staged = self.openUpload(path)
        staged.writeChunks([b"lost"])
        self.replaceRoot()
        staged.writeChunks([b" more"])
        error = self.assertRaises(UploadError, staged.sync)
        self.assertEqual((error.status, error.code), (500, "staged-gone"))
        error = self.assertRaises(UploadError, self.store.complete, path, staged, False)
        self.assertEqual(error.code, "staged-gone")
        self.assertEqual(sorted(os.listdir(self.root)), [STATE_DIR])


class AppAnswerTests(StubRequests, _Planted, SynchronousTestCase):
    """
    What a client gets (StubTreq, disk calls inline).
    """

    def setUp(self) -> None:
        super().setUp()
        self.build(Config(maxUploadSize=1_000_000))
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def build(self, config: Config, root: str | None = None) -> None:
        self.store = self.makeStore(fsync=False) if root is None else FileStore(root, fsync=False)
        if root is not None:
            self.addCleanup(self.store.close)
        self.app = UploadApp(self.store, ImmediateRunner(), config)
        self.treq = StubTreq(self.app.resource())

    def assertRefused(self, response: Any, content: bytes, status: int) -> None:
        self.assertEqual(response.code, status, content)
        self.assertEqual(content.count(b"\n"), 1, content)
        self.assertEqual(self.header(response, "Content-Type"), "text/plain; charset=utf-8")

    def tracebacks(self) -> list[dict[str, Any]]:
        return [e for e in self.logged if "log_failure" in e]

    def errorLines(self) -> list[dict[str, Any]]:
        return [e for e in self.logged if str(e.get("log_level")) == "<LogLevel=error>"]

    def test_plantedDataLink(self) -> None:
        """
        HEAD and PUT of an upload whose data file is a planted link are a
        500 with a one-line reason and one error line in the log, no
        traceback; the file outside is untouched.
        """
        path = parseRelativePath("f.bin")
        self.plantLink(self.dataFile(path))
        for method, body, headers in [
            ("HEAD", b"", {}),
            ("PUT", b"x" * 10, {}),
            ("PUT", b"x" * 10, {"Content_Range": "bytes 14-23/30"}),
        ]:
            response, content = self.request(method, "/f.bin", body, **headers)
            self.assertEqual(response.code, 500, (method, headers))
            if method == "PUT":
                self.assertRefused(response, content, 500)
                self.assertIn(b"link", content)
        self.assertEqual(self.tracebacks(), [])
        self.assertEqual(len(self.errorLines()), 3)
        self.assertOutsideUntouched()

    def test_headOnLinkDestination(self) -> None:
        """
        HEAD on a path that is a symbolic link is a 409, not a complete
        upload with the link's own length.
        """
        os.symlink(self.secret, os.path.join(self.root, "l.bin"))
        response, _ = self.request("HEAD", "/l.bin")
        self.assertEqual(response.code, 409)
        self.assertIsNone(self.header(response, "Upload-Complete"))
        response, content = self.request("PUT", "/l.bin", Content_Range="bytes */14")
        self.assertRefused(response, content, 409)

    def test_deleteOnLinkDestination(self) -> None:
        """
        DELETE on a path that is a link is a 409 even where deletes are
        allowed, and the link stays.
        """
        self.build(Config(allowDelete=True))
        os.symlink(self.secret, os.path.join(self.root, "l.bin"))
        response, content = self.request("DELETE", "/l.bin")
        self.assertRefused(response, content, 409)
        self.assertTrue(os.path.islink(os.path.join(self.root, "l.bin")))

    def test_deleteThroughLinkedFolder(self) -> None:
        """
        DELETE through a linked folder is a 403 like HEAD and PUT, and the
        staged upload stays.
        """
        os.makedirs(os.path.join(self.root, "dir"))
        response, _ = self.request("PUT", "/dir/f.bin", b"abc", Content_Range="bytes 0-2/10")
        self.assertEqual(response.code, 204)
        os.rename(os.path.join(self.root, "dir"), os.path.join(self.root, "dir-moved"))
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        for method in ("HEAD", "DELETE"):
            response, _ = self.request(method, "/dir/f.bin")
            self.assertEqual(response.code, 403, method)
        self.assertEqual(self.readFile(self.dataFile(parseRelativePath("dir/f.bin"))), b"abc")

    def test_deleteThroughLinkedFolderEndsNoWriter(self) -> None:
        """
        A DELETE refused for a linked folder does not end the request that
        writes the upload.
        """
        ended: list[str] = []
        key = FileStore.keyFor(parseRelativePath("dir/f.bin"))
        self.app.writers.acquire(key, lambda: ended.append(key))
        os.symlink(self.outside, os.path.join(self.root, "dir"))
        response, _ = self.request("DELETE", "/dir/f.bin")
        self.assertEqual(response.code, 403)
        self.assertEqual(ended, [])

    def test_finalRetryOnLinkDestination(self) -> None:
        """
        A retried final range on a path that is now a link (of the upload's
        total length) is a 409 with a reason, not a 500.
        """
        target = os.path.join(self.outside, "t" * 20)
        os.symlink(target, os.path.join(self.root, "l.bin"))
        total = len(target)
        response, content = self.request(
            "PUT", "/l.bin", b"x" * total, Content_Range=f"bytes 0-{total - 1}/{total}"
        )
        self.assertRefused(response, content, 409)
        self.assertEqual(self.tracebacks(), [])

    def test_corruptInfoNoPermanent500(self) -> None:
        """
        An upload whose C{.json} is corrupt still answers HEAD with its
        offset, and can be resumed and completed.
        """
        response, _ = self.request("PUT", "/c.bin", b"abc", Content_Range="bytes 0-2/6")
        self.assertEqual(response.code, 204)
        with open(self.infoFile(parseRelativePath("c.bin")), "wb") as f:
            f.write(b"\x00garbage")
        response, _ = self.request("HEAD", "/c.bin")
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "3"))
        response, _ = self.request("PUT", "/c.bin", b"def", Content_Range="bytes 3-5/6")
        self.assertEqual(response.code, 201)
        self.assertEqual(self.readFile(self.root, "c.bin"), b"abcdef")

    def test_tooManyOpenFiles(self) -> None:
        """
        With no file descriptor left (every upload in progress holds
        three), a write and a status query are 503 with Retry-After and a
        one-line reason, one error line and no traceback; once descriptors
        are free again the same upload goes on.
        """
        response, _ = self.request("PUT", "/fd.bin", b"abc", Content_Range="bytes 0-2/6")
        self.assertEqual(response.code, 204)
        release = exhaustDescriptors(self)
        for method, body, headers in [
            ("PUT", b"def", {"Content_Range": "bytes 3-5/6"}),
            ("PUT", b"", {"Content_Range": "bytes */6"}),
        ]:
            response, content = self.request(method, "/fd.bin", body, **headers)
            self.assertRefused(response, content, 503)
            self.assertEqual(self.header(response, "Retry-After"), "1")
        self.assertEqual(self.tracebacks(), [])
        self.assertEqual(len(self.errorLines()), 2)
        release()
        response, _ = self.request("PUT", "/fd.bin", b"def", Content_Range="bytes 3-5/6")
        self.assertEqual(response.code, 201)

    def test_totalBelowOffsetIgnored(self) -> None:
        """
        Metadata whose total is below the bytes staged cannot be right: HEAD
        reports the offset without that total, and the upload can go on.
        """
        response, _ = self.request("PUT", "/t.bin", b"0123456789", Content_Range="bytes 0-9/20")
        self.assertEqual(response.code, 204)
        with open(self.infoFile(parseRelativePath("t.bin")), "w") as f:
            json.dump({"path": "t.bin", "total": 5}, f)
        response, _ = self.request("HEAD", "/t.bin")
        self.assertEqual(self.header(response, "Upload-Offset"), "10")
        self.assertIsNone(self.header(response, "Upload-Length"))
        response, _ = self.request("PUT", "/t.bin", b"abcdefghij", Content_Range="bytes 10-19/20")
        self.assertEqual(response.code, 201)

    def test_misshapenInfoNoPermanent500(self) -> None:
        """
        A C{.json} that is JSON but not of the shape the server writes (a
        total that is not a count, digests that are not base64 of the
        right length, fields of the wrong type) is set aside like a
        corrupt one: HEAD, a status query, a resume and a plain PUT all
        work, and no impossible digest discards the upload.
        """
        shapes = [
            b"", b"[]", b'{"total": "abc"}', b'{"total": -5}', b'{"total": 2.5}',
            b'{"digests": [1]}', b'{"digests": {"sha-256": "!!!"}}',
            b'{"digests": {"sha-256": "AAAA"}}', b'{"generation": 5}', b'{"path": 1}',
        ]
        for i, shape in enumerate(shapes):
            name = f"m{i}.bin"
            response, _ = self.request("PUT", "/" + name, b"abc", Content_Range="bytes 0-2/6")
            self.assertEqual(response.code, 204, shape)
            with open(self.infoFile(parseRelativePath(name)), "wb") as f:
                f.write(shape)
            response, _ = self.request("HEAD", "/" + name)
            self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "3"), shape)
            response, _ = self.request("PUT", "/" + name, Content_Range="bytes */6")
            self.assertEqual(response.code, 204, shape)
            response, _ = self.request("PUT", "/" + name, b"def", Content_Range="bytes 3-5/6")
            self.assertEqual(response.code, 201, shape)
            self.assertEqual(self.readFile(self.root, name), b"abcdef")

    def test_noInodes(self) -> None:
        """
        With no inode left, a new upload is a 507 with a reason (and one
        log line, no traceback), before its body is stored.
        """
        root = os.path.join(self.base, "small")
        smallTmpfs(self, root, 64)
        self.build(Config(), root)
        fillInodes(root)
        response, content = self.request("PUT", "/new/f.bin", b"data")
        self.assertRefused(response, content, 507)
        response, content = self.request("PUT", "/f.bin", b"data")
        self.assertRefused(response, content, 507)
        self.assertEqual(self.tracebacks(), [])

    def test_readOnlyRoot(self) -> None:
        """
        When the root turns read-only, a write is a 503 with a reason and
        Retry-After (one log line, no traceback), the staged bytes are
        kept, and HEAD still answers.
        """
        disk = os.path.join(self.base, "disk")
        fail = failingDisk(self, disk)
        self.build(Config(), disk)
        response, _ = self.request("PUT", "/r.bin", b"abc", Content_Range="bytes 0-2/6")
        self.assertEqual(response.code, 204)
        fail()
        for path, body, headers in [
            ("/r.bin", b"def", {"Content_Range": "bytes 3-5/6"}),
            ("/n.bin", b"new", {}),
            ("/d/n.bin", b"new", {}),
        ]:
            response, content = self.request("PUT", path, body, **headers)
            self.assertRefused(response, content, 503)
            self.assertEqual(self.header(response, "Retry-After"), "60")
        response, _ = self.request("HEAD", "/r.bin")
        self.assertEqual((response.code, self.header(response, "Upload-Offset")), (204, "3"))
        self.assertEqual(self.tracebacks(), [])
        self.assertEqual(len(self.errorLines()), 3)
        key = FileStore.keyFor(parseRelativePath("r.bin"))
        staged = os.path.join(disk, STATE_DIR, "uploads", shardOf(key), key + ".data")
        self.assertEqual(self.readFile(staged), b"abc")


class NoReplaceTests(_Planted, SynchronousTestCase):
    """
    With overwrite off, a file that another program makes at the
    destination after the check is never replaced by the completion.
    """

    def test_renameNoReplace(self) -> None:
        """L{renameNoReplace} moves onto nothing, and refuses an existing entry."""
        folder = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, folder)
        for name, content in [("a", b"a"), ("b", b"b"), ("c", b"c")]:
            with open(os.path.join(self.base, name), "wb") as f:
                f.write(content)
        self.assertTrue(renameNoReplace(folder, "a", folder, "new"))
        self.assertRaises(FileExistsError, renameNoReplace, folder, "b", folder, "c")
        self.assertEqual(self.readFile(self.base, "c"), b"c")
        self.assertEqual(self.readFile(self.base, "b"), b"b")

    def test_madeAfterTheCheck(self) -> None:
        """
        A destination made between the completion's check and its rename
        is kept, and the completion is refused 409 with the upload still
        staged.
        """
        path = parseRelativePath("late.bin")
        staged = self.openUpload(path, total=3)
        staged.writeChunks([b"new"])
        real = filestore.lstatAt

        def checkThenSomeoneWrites(folderFD: int, name: str) -> os.stat_result | None:
            found = real(folderFD, name)
            with open(os.path.join(self.root, "late.bin"), "wb") as f:
                f.write(b"theirs")
            return found

        self.patch(filestore, "lstatAt", checkThenSomeoneWrites)
        error = self.assertRaises(Conflict, self.store.complete, path, staged, False)
        self.assertEqual(error.code, "exists")
        self.assertEqual(self.readFile(self.root, "late.bin"), b"theirs")
        self.assertEqual(self.store.inspect(path).offset, 3)


class DestinationFolderTests(StubRequests, _Planted, SynchronousTestCase):
    """
    Folders of the destination's path that are mount points, or that are
    removed while an upload completes.
    """

    def setUp(self) -> None:
        super().setUp()
        self.app = UploadApp(self.store, ImmediateRunner(), Config())
        self.treq = StubTreq(self.app.resource())

    def test_mountPointRefused(self) -> None:
        """
        A path through a mount point inside the root (another file system,
        or a bind mount of something outside) is 403 for every method:
        nothing in it is reported, written or removed.
        """
        mounted = os.path.join(self.root, "mnt")
        smallTmpfs(self, mounted, 64)
        with open(os.path.join(mounted, "secret"), "wb") as f:
            f.write(b"outside")
        for method, path in [("HEAD", "/mnt/secret"), ("PUT", "/mnt/new"), ("DELETE", "/mnt/secret")]:
            response, _ = self.request(method, path, b"data" if method == "PUT" else b"")
            self.assertEqual(response.code, 403, (method, path))
        self.assertEqual(os.listdir(mounted), ["secret"])

    def test_bindMountRefused(self) -> None:
        """
        A bind mount inside the root of a folder from the same file system
        (same device, another mount) is 403 too: a DELETE through it, with
        deletes allowed, does not remove the file it leads to.
        """
        self.app = UploadApp(self.store, ImmediateRunner(), Config(allowDelete=True))
        self.treq = StubTreq(self.app.resource())
        with open(os.path.join(self.outside, "secret"), "wb") as f:
            f.write(b"outside")
        mounted = os.path.join(self.root, "bind")
        os.makedirs(mounted)
        mount(self, "--bind", self.outside, mounted)
        for method, path in [("HEAD", "/bind/secret"), ("PUT", "/bind/new"), ("DELETE", "/bind/secret")]:
            response, _ = self.request(method, path, b"data" if method == "PUT" else b"")
            self.assertEqual(response.code, 403, (method, path))
        self.assertEqual(sorted(os.listdir(self.outside)), ["secret"])

    def test_folderRemovedDuringCompletion(self) -> None:
        """
        When the destination's folder is removed between being opened and
        the rename, the completion is a 503 with Retry-After and the upload
        stays staged, whole; the retry completes it.
        """
        real = filestore.openParent
        removed: list[str] = []

        def openThenRemove(rootFD: int, folders: Any, create: bool, *a: Any, **kw: Any) -> Any:
            fd = real(rootFD, folders, create, *a, **kw)
            if create and not removed:
                removed.append("/".join(folders))
                os.rmdir(os.path.join(self.root, *folders))
            return fd

        self.patch(filestore, "openParent", openThenRemove)
        response, content = self.request("PUT", "/gone/f.bin", b"abcdef", Content_Range="bytes 0-5/6")
        self.assertEqual(response.code, 503, content)
        self.assertEqual(self.header(response, "Retry-After"), "1")
        self.assertEqual(removed, ["gone"])
        self.assertEqual(self.store.inspect(parseRelativePath("gone/f.bin")).offset, 6)
        response, _ = self.request("PUT", "/gone/f.bin", Content_Range="bytes */6")
        self.assertEqual(response.code, 201)
        self.assertEqual(self.readFile(self.root, "gone", "f.bin"), b"abcdef")
