"""
Tests for L{uploadsvc.storage.statedir}: the server's own folder is never
reached through a symbolic link, a hard link or a FIFO planted in it, and its
metadata files are replaced atomically through temp files of their own.
Real files in a temporary folder; nothing else.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from uploadsvc.errors import UnsafeState
from uploadsvc.storage import statedir
from uploadsvc.storage.statedir import STATE_DIR, CorruptState, StateDir
from uploadsvc.storage.syscalls import SystemCalls

#: The uid and gid of another user (Debian's nobody).
NOBODY = 65534


class StateDirTestsMixin:
    """
    A root with a folder I{outside} it that planted links point at.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        self.rootFD = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, self.rootFD)  # type: ignore[attr-defined]
        self.secret = os.path.join(self.outside, "secret")
        with open(self.secret, "wb") as f:
            f.write(b"outside-secret")

    def state(self, *parts: str) -> str:
        return os.path.join(self.root, STATE_DIR, *parts)

    def openState(self) -> StateDir:
        state = StateDir(self.rootFD)
        self.addCleanup(state.close)  # type: ignore[attr-defined]
        return state

    def folder(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)  # type: ignore[attr-defined]
        return fd

    def assertOutsideUntouched(self) -> None:
        t: Any = self
        t.assertEqual(sorted(os.listdir(self.outside)), ["secret"])
        with open(self.secret, "rb") as f:
            t.assertEqual(f.read(), b"outside-secret")


class StateDirOpenTests(StateDirTestsMixin, SynchronousTestCase):
    """
    L{StateDir} opens (and makes) C{.uploadsvc}, C{uploads}, C{takeover} and
    C{lock}, and refuses each of them when it is a link.
    """

    def test_makesLayout(self) -> None:
        """
        On an empty root it makes the state folder, its two folders and the
        lock file.
        """
        self.openState()
        self.assertEqual(sorted(os.listdir(self.state())), ["lock", "takeover", "uploads"])
        self.assertTrue(os.path.isfile(self.state("lock")))

    def test_linkedStateFolderRefused(self) -> None:
        """
        A C{.uploadsvc} that is a link is refused, and nothing is made where
        it points.
        """
        os.symlink(self.outside, self.state())
        error = self.assertRaises(UnsafeState, StateDir, self.rootFD)
        self.assertEqual(error.status, 500)
        self.assertIn("symbolic link", error.detail)
        self.assertOutsideUntouched()

    def test_linkedSubfoldersRefused(self) -> None:
        """
        C{uploads} or C{takeover} as a link is refused, and nothing is made
        where it points.
        """
        for name in ("uploads", "takeover"):
            os.makedirs(self.state(), exist_ok=True)
            os.symlink(self.outside, self.state(name))
            self.assertRaises(UnsafeState, StateDir, self.rootFD)
            self.assertOutsideUntouched()
            os.unlink(self.state(name))

    def test_danglingLockLinkRefused(self) -> None:
        """
        A C{lock} that is a dangling link is refused: the file it names is
        not created.
        """
        os.makedirs(self.state())
        os.symlink(os.path.join(self.outside, "made"), self.state("lock"))
        self.assertRaises(UnsafeState, StateDir, self.rootFD)
        self.assertOutsideUntouched()

    def test_hardLinkedLockRefused(self) -> None:
        """
        A C{lock} that is another name of a file elsewhere is refused.
        """
        os.makedirs(self.state())
        os.link(self.secret, self.state("lock"))
        error = self.assertRaises(UnsafeState, StateDir, self.rootFD)
        self.assertIn("hard link", error.detail)

    def test_lockPathIsTheCheckedFile(self) -> None:
        """
        L{StateDir.lockPath} opens the lock file that was checked, even once
        its name was swapped for a link.
        """
        state = self.openState()
        path = state.lockPath(self.state("lock"))
        checked = os.fstat(state.lockFD).st_ino
        os.rename(self.state("lock"), self.state("lock-moved"))
        os.symlink(self.secret, self.state("lock"))
        fd = os.open(path, os.O_RDWR)
        try:
            self.assertEqual(os.fstat(fd).st_ino, checked)
        finally:
            os.close(fd)

    def test_matches(self) -> None:
        """
        L{StateDir.matches} holds until a folder of the state or the lock
        file is removed or replaced.
        """
        state = self.openState()
        self.assertTrue(state.matches(self.rootFD))
        os.rename(self.state("uploads"), self.state("old"))
        os.symlink(self.outside, self.state("uploads"))
        self.assertFalse(state.matches(self.rootFD))
        os.unlink(self.state("uploads"))
        os.rename(self.state("old"), self.state("uploads"))
        self.assertTrue(state.matches(self.rootFD))
        os.unlink(self.state("lock"))
        self.assertFalse(state.matches(self.rootFD))

    def test_linkedShardRefused(self) -> None:
        """
        An C{uploads/<xx>} folder that is a link is refused, with or without
        C{create}, and nothing is made where it points.
        """
        state = self.openState()
        os.symlink(self.outside, self.state("uploads", "ab"))
        self.assertRaises(UnsafeState, state.shard, "ab", False)
        self.assertRaises(UnsafeState, state.shard, "ab", True)
        self.assertOutsideUntouched()

    def test_shardMadeOnce(self) -> None:
        """
        L{StateDir.shard} makes a missing folder only when asked to.
        """
        state = self.openState()
        self.assertIsNone(state.shard("cd", False))
        fd = state.shard("cd", True)
        assert fd is not None
        os.close(fd)
        self.assertTrue(os.path.isdir(self.state("uploads", "cd")))

    def test_markers(self) -> None:
        """
        Markers are made, listed and dropped; a marker name that is a
        dangling link is refused and its target not created.
        """
        state = self.openState()
        state.touchMarker("k1")
        state.touchMarker("k1")
        self.assertEqual(state.markers(), ["k1"])
        state.dropMarker("k1")
        state.dropMarker("k1")
        self.assertEqual(state.markers(), [])
        os.symlink(os.path.join(self.outside, "made"), self.state("takeover", "k2"))
        self.assertRaises(UnsafeState, state.touchMarker, "k2")
        self.assertOutsideUntouched()

    def test_plantedMarkerNotRemoved(self) -> None:
        """
        A link, a hard link, a FIFO or a folder planted at a marker's name
        is refused when the marker is dropped, and stays for the operator.
        """
        state = self.openState()
        target = os.path.join(self.outside, "kept")
        with open(target, "w") as f:
            f.write("x")
        os.symlink(target, self.state("takeover", "s"))
        os.link(target, self.state("takeover", "h"))
        os.mkfifo(self.state("takeover", "f"))
        os.mkdir(self.state("takeover", "d"))
        for name in ("s", "h", "f", "d"):
            self.assertRaises(UnsafeState, state.dropMarker, name)
            self.assertTrue(os.path.lexists(self.state("takeover", name)), name)
        self.assertEqual(os.stat(target).st_nlink, 2)


class OpenFileTests(StateDirTestsMixin, SynchronousTestCase):
    """
    L{statedir.openFile} opens only a regular file with one name.
    """

    def setUp(self) -> None:
        super().setUp()
        self.dirFD = self.folder(self.root)

    def test_missing(self) -> None:
        """
        A missing file is L{None} without C{O_CREAT}, and made with it.
        """
        self.assertIsNone(statedir.openFile(self.dirFD, "f", os.O_RDONLY, "f"))
        fd = statedir.openFile(self.dirFD, "f", os.O_RDWR | os.O_CREAT, "f")
        assert fd is not None
        os.close(fd)
        self.assertTrue(os.path.isfile(os.path.join(self.root, "f")))

    def test_linkRefused(self) -> None:
        """
        A link (to a file, or dangling) is refused for reading and writing,
        and neither followed nor its target created.
        """
        os.symlink(self.secret, os.path.join(self.root, "l"))
        os.symlink(os.path.join(self.outside, "made"), os.path.join(self.root, "d"))
        for name in ("l", "d"):
            for flags in (os.O_RDONLY, os.O_RDWR | os.O_CREAT):
                error = self.assertRaises(
                    UnsafeState, statedir.openFile, self.dirFD, name, flags, name
                )
                self.assertIn("symbolic link", error.detail)
        self.assertOutsideUntouched()

    def test_hardLinkRefused(self) -> None:
        """
        A file with another name elsewhere is refused.
        """
        os.link(self.secret, os.path.join(self.root, "h"))
        error = self.assertRaises(
            UnsafeState, statedir.openFile, self.dirFD, "h", os.O_RDWR | os.O_CREAT, "h"
        )
        self.assertIn("2 names", error.detail)

    def test_fifoRefused(self) -> None:
        """
        A FIFO is refused at once, for reading and for writing (no open
        waits for the other end).
        """
        os.mkfifo(os.path.join(self.root, "p"))
        for flags in (os.O_RDONLY, os.O_RDWR | os.O_CREAT, os.O_WRONLY):
            self.assertRaises(UnsafeState, statedir.openFile, self.dirFD, "p", flags, "p")

    def test_folderRefused(self) -> None:
        """
        A folder is refused.
        """
        os.mkdir(os.path.join(self.root, "d"))
        for flags in (os.O_RDONLY, os.O_RDWR | os.O_CREAT):
            self.assertRaises(UnsafeState, statedir.openFile, self.dirFD, "d", flags, "d")

    def test_unlinkFile(self) -> None:
        """
        L{statedir.unlinkFile} removes a regular file, says when there was
        none, and refuses a link (left in place).
        """
        with open(os.path.join(self.root, "f"), "wb") as f:
            f.write(b"x")
        self.assertTrue(statedir.unlinkFile(self.dirFD, "f", "f"))
        self.assertFalse(statedir.unlinkFile(self.dirFD, "f", "f"))
        os.symlink(self.secret, os.path.join(self.root, "l"))
        self.assertRaises(UnsafeState, statedir.unlinkFile, self.dirFD, "l", "l")
        self.assertTrue(os.path.islink(os.path.join(self.root, "l")))

    def test_checkStaged(self) -> None:
        """
        L{statedir.checkStaged} passes while the name leads to the open
        file, and refuses once it was swapped for a link.
        """
        fd = statedir.openFile(self.dirFD, "s", os.O_RDWR | os.O_CREAT, "s")
        assert fd is not None
        self.addCleanup(os.close, fd)
        statedir.checkStaged(fd, self.dirFD, "s", "s")
        os.rename(os.path.join(self.root, "s"), os.path.join(self.root, "s-moved"))
        os.symlink(self.secret, os.path.join(self.root, "s"))
        self.assertRaises(UnsafeState, statedir.checkStaged, fd, self.dirFD, "s", "s")
        os.unlink(os.path.join(self.root, "s"))
        self.assertRaises(FileNotFoundError, statedir.checkStaged, fd, self.dirFD, "s", "s")


class JSONTests(StateDirTestsMixin, SynchronousTestCase):
    """
    Metadata files: read only when they are ours, written atomically
    through a temp file that no other writer shares.
    """

    def setUp(self) -> None:
        super().setUp()
        self.dirFD = self.folder(self.root)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def test_roundTrip(self) -> None:
        """
        What L{statedir.writeJSON} writes, L{statedir.readJSON} reads, and no
        temp file stays behind.
        """
        statedir.writeJSON(self.dirFD, "k.json", {"total": 5}, fsync=True)
        self.assertEqual(statedir.readJSON(self.dirFD, "k.json", "k"), {"total": 5})
        self.assertEqual(os.listdir(self.root), ["k.json"])
        self.assertIsNone(statedir.readJSON(self.dirFD, "none.json", "none"))

    def test_corrupt(self) -> None:
        """
        A cut-short file, a non-object and an oversized file are
        L{CorruptState}, not a crash.
        """
        for content in [b'{"total": 1', b"[1, 2]", b"\xff\xfe", b" " * (statedir.MAX_JSON + 1)]:
            with open(self.path("c.json"), "wb") as f:
                f.write(content)
            self.assertRaises(CorruptState, statedir.readJSON, self.dirFD, "c.json", "c")

    def test_readLinkRefused(self) -> None:
        """
        A C{.json} that is a link or a hard link is refused, not read.
        """
        os.symlink(self.secret, self.path("l.json"))
        os.link(self.secret, self.path("h.json"))
        for name in ("l.json", "h.json"):
            self.assertRaises(UnsafeState, statedir.readJSON, self.dirFD, name, name)

    def test_plantedTempNotFollowed(self) -> None:
        """
        A link planted at the temp name a writer used to share
        (C{<name>.tmp}) is not followed: its target is neither created nor
        written.
        """
        os.symlink(os.path.join(self.outside, "made"), self.path("k.json.tmp"))
        os.symlink(self.secret, self.path("j.json.tmp"))
        statedir.writeJSON(self.dirFD, "k.json", {"a": 1}, fsync=False)
        statedir.writeJSON(self.dirFD, "j.json", {"b": 2}, fsync=False)
        self.assertOutsideUntouched()
        with open(self.path("k.json")) as f:
            self.assertEqual(json.load(f), {"a": 1})
        self.assertFalse(os.path.islink(self.path("k.json")))

    def test_writersAtOnce(self) -> None:
        """
        Two writers of one file at the same time each go through their own
        temp file: both succeed and the file is whole, whichever renamed
        last.
        """
        nested: list[str] = []
        dirFD = self.dirFD

        class Interleaved(SystemCalls):
            def replace(self, src: str, dst: str, **kw: Any) -> None:
                # The first writer is about to rename; a second one runs whole.
                if not nested:
                    nested.append(src)
                    statedir.writeJSON(dirFD, "k.json", {"writer": 2}, fsync=False)
                super().replace(src, dst, **kw)

        statedir.writeJSON(self.dirFD, "k.json", {"writer": 1}, False, Interleaved())
        self.assertEqual(len(nested), 1)  # the second writer did run in between
        self.assertEqual(statedir.readJSON(self.dirFD, "k.json", "k"), {"writer": 1})
        self.assertEqual(os.listdir(self.root), ["k.json"])

    def test_failedWriteLeavesNoTemp(self) -> None:
        """
        A write that fails before its rename removes its temp file and
        leaves the old content.
        """
        statedir.writeJSON(self.dirFD, "k.json", {"old": True}, fsync=False)

        class Failing(SystemCalls):
            def replace(self, src: str, dst: str, **kw: Any) -> None:
                raise OSError(28, "No space left on device")

        self.assertRaises(
            OSError, statedir.writeJSON, self.dirFD, "k.json", {"new": 1}, False, Failing()
        )
        self.assertEqual(os.listdir(self.root), ["k.json"])
        self.assertEqual(statedir.readJSON(self.dirFD, "k.json", "k"), {"old": True})


class ForeignStateTests(StateDirTestsMixin, SynchronousTestCase):
    """
    Folders and files of the state that another user owns, or that other
    users may write, are refused: whoever may write under the root cannot
    put a state of their own in the server's place.
    """

    def setUp(self) -> None:
        super().setUp()
        if os.geteuid() != 0:
            raise SkipTest("giving a file to another user needs root (CI runs as root)")

    def test_foreignStateFolderRefused(self) -> None:
        """A C{.uploadsvc} made by another user is refused, also once in use."""
        os.mkdir(self.state())
        os.chown(self.state(), NOBODY, NOBODY)
        self.assertRaises(UnsafeState, StateDir, self.rootFD)

    def test_writableSubfolderRefused(self) -> None:
        """A state folder that others may write is refused."""
        StateDir(self.rootFD).close()
        os.chmod(self.state("uploads"), 0o777)
        error = self.assertRaises(UnsafeState, StateDir, self.rootFD)
        self.assertIn("may be written by other users", error.detail)

    def test_foreignFilesRefused(self) -> None:
        """
        A staged file, metadata or lock file that another user owns is
        refused, and so is one that others may write.
        """
        folder = self.folder(self.root)
        for name, owner, mode in [("a.data", NOBODY, 0o644), ("b.json", NOBODY, 0o644),
                                  ("c.data", 0, 0o666)]:
            path = os.path.join(self.root, name)
            with open(path, "wb") as f:
                f.write(b"{}")
            os.chown(path, owner, owner)
            os.chmod(path, mode)
            self.assertRaises(UnsafeState, statedir.openFile, folder, name, os.O_RDONLY, name)
        self.assertRaises(UnsafeState, statedir.readJSON, folder, "b.json", "b.json")
        StateDir(self.rootFD).close()
        os.chown(self.state("lock"), NOBODY, NOBODY)
        self.assertRaises(UnsafeState, StateDir, self.rootFD)

    def test_deeplyNestedJSONIsCorrupt(self) -> None:
        """JSON nested deeper than the parser goes is corrupt metadata, not a crash."""
        folder = self.folder(self.root)
        with open(os.path.join(self.root, "deep.json"), "wb") as f:
            f.write(b"[" * 60000)
        self.assertRaises(CorruptState, statedir.readJSON, folder, "deep.json", "deep.json")
