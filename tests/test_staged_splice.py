"""
Tests for the zero-copy side of L{uploadsvc.storage.staged.StagedFile}:
bytes moved from a pipe into the file, and ranges hashed from the page
cache.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.staged import StagedFile, hashFileRange


class _Store:
    throttle = None


class SpliceInTests(SynchronousTestCase):
    """
    L{StagedFile.spliceIn} and L{StagedFile.spliceable}.
    """

    def staged(self, flags: int = 0) -> StagedFile:
        fd = os.open(self.mktemp(), os.O_RDWR | os.O_CREAT | flags, 0o600)
        self.addCleanup(os.close, fd)
        return StagedFile(_Store(), "k", fd, 0, hashlib.sha256(), {}, False)  # type: ignore[arg-type]

    def pipeWith(self, data: bytes) -> int:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.write(w, data)
        return r

    def test_appendsAtOffset(self) -> None:
        """Bytes waiting in the pipe land at the staged offset, which moves past them."""
        staged = self.staged()
        staged.writeChunks([b"head"])
        self.assertEqual(staged.spliceIn(self.pipeWith(b"-spliced"), 8), 4)
        self.assertEqual(staged.offset, 12)
        self.assertEqual(os.pread(staged.fd, 100, 0), b"head-spliced")
        self.assertTrue(staged.spliceable())

    def test_refusedSpliceCopies(self) -> None:
        """A file that refuses splice(2) (EINVAL: here, opened for appending) gets the bytes copied, and its store is not spliced into again."""
        staged = self.staged(os.O_APPEND)
        self.assertTrue(staged.spliceable())
        self.assertEqual(staged.spliceIn(self.pipeWith(b"copied"), 6), 0)
        self.assertEqual(os.pread(staged.fd, 100, 0), b"copied")
        self.assertEqual(staged.offset, 6)
        self.assertFalse(staged.spliceable())
        other = StagedFile(staged.store, "k2", staged.fd, 6, None, {}, False)
        self.assertFalse(other.spliceable())
        self.assertTrue(self.staged().spliceable())  # (another store)


class HashFileRangeTests(SynchronousTestCase):
    """
    L{hashFileRange}.
    """

    def test_rangesEqualTheBytes(self) -> None:
        """Any range, aligned or not, across map spans, is fed exactly its bytes."""
        data = os.urandom(40 * mmap.ALLOCATIONGRANULARITY + 123)
        fd = os.open(self.mktemp(), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, data)
        ranges = [
            (0, len(data)), (1, 10), (4095, 2), (mmap.ALLOCATIONGRANULARITY, 7),
            (100, len(data) - 100), (5000, 70 * 1024),
        ]
        for span in [mmap.ALLOCATIONGRANULARITY, 3000, 8 * 1024 * 1024]:
            for start, count in ranges:
                got: list[bytes] = []

                def update(chunks: Any) -> None:
                    got.extend(bytes(c) for c in chunks)

                hashFileRange(fd, start, count, update, span)
                self.assertEqual(b"".join(got), data[start:start + count], (span, start, count))

    def test_staleSizeReadInstead(self) -> None:
        """
        When mmap refuses the range because fstat's size is stale (a shared
        mount's attribute cache right after this process wrote), the bytes
        are read instead, exactly.
        """
        data = os.urandom(3 * 1024 * 1024 + 5)
        fd = os.open(self.mktemp(), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, data)

        def staleSize(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("mmap length is greater than file size")

        self.patch(mmap, "mmap", staleSize)
        got: list[bytes] = []
        hashFileRange(fd, 7, len(data) - 7, lambda chunks: got.extend(bytes(c) for c in chunks), 1024 * 1024)
        self.assertEqual(b"".join(got), data[7:])

    def test_rangePastTheEnd(self) -> None:
        """A range the file does not hold is an error, never fewer bytes hashed."""
        fd = os.open(self.mktemp(), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, b"x" * 1000)
        got: list[bytes] = []
        for count in (100, 10 * 1024 * 1024):
            error = self.assertRaises(
                OSError, hashFileRange, fd, 950, count, lambda chunks: got.extend(chunks)
            )
            self.assertEqual(error.errno, errno.EIO)


class FuseStoreTests(SynchronousTestCase):
    """
    A L{FileStore} on a FUSE mount never splices (the bytes are hashed by
    reading them back, which such a mount may cut short at a stale size).
    """

    def test_fuseRootNeverSpliced(self) -> None:
        from uploadsvc.storage import filestore, staged

        self.patch(filestore, "onFuse", lambda path: True)
        store = filestore.FileStore(self.mktemp())
        self.addCleanup(store.close)
        self.assertIn(store, staged._UNSPLICEABLE)

    def test_localRootSpliced(self) -> None:
        from uploadsvc.storage import filestore, staged

        store = filestore.FileStore(self.mktemp())
        self.addCleanup(store.close)
        self.assertNotIn(store, staged._UNSPLICEABLE)
