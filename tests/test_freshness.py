"""
L{uploadsvc.storage.freshness} on a local disk: the size and listing it
reads from the file system agree with C{fstat} and C{open} there. (Across
hosts, where they differ, tests/test_e2e_gluster.py is the proof.)
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage.freshness import (
    closeReader, dataSize, isListed, mountType, onFuse, rootMountType,
)


class DataSizeTests(SynchronousTestCase):
    def open(self) -> int:
        path = os.path.abspath(self.mktemp())
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        return fd

    def test_emptyFile(self) -> None:
        """An empty file's size is 0 (SEEK_HOLE answers ENXIO there)."""
        self.assertEqual(dataSize(self.open()), 0)

    def test_appendedFile(self) -> None:
        """A file written from its start has the size fstat reports, after every append."""
        fd = self.open()
        for piece in (1, 4095, 70000, 3):
            os.pwrite(fd, b"x" * piece, os.fstat(fd).st_size)
            self.assertEqual(dataSize(fd), os.fstat(fd).st_size)

    def test_truncated(self) -> None:
        """After a truncation (a rollback, a start-over) the size is the truncated one."""
        fd = self.open()
        os.write(fd, b"y" * 100000)
        os.ftruncate(fd, 1234)
        self.assertEqual(dataSize(fd), 1234)
        os.ftruncate(fd, 0)
        self.assertEqual(dataSize(fd), 0)

    def test_positionKept(self) -> None:
        """The file position is where it was (readers that use read() go on from there)."""
        fd = self.open()
        os.write(fd, b"z" * 5000)
        os.lseek(fd, 17, os.SEEK_SET)
        self.assertEqual(dataSize(fd), 5000)
        self.assertEqual(os.lseek(fd, 0, os.SEEK_CUR), 17)

    def test_readOnly(self) -> None:
        """A descriptor open for reading only (a status query) is enough."""
        fd = self.open()
        os.write(fd, b"r" * 300)
        path = f"/proc/self/fd/{fd}"
        reader = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, reader)
        self.assertEqual(dataSize(reader), 300)


class IsListedTests(SynchronousTestCase):
    def test_listedOrNot(self) -> None:
        """A name is listed while it exists, and not after a rename or removal."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        self.assertFalse(isListed(fd, "a.data"))
        with open(os.path.join(folder, "a.data"), "wb"):
            pass
        self.assertTrue(isListed(fd, "a.data"))
        os.rename(os.path.join(folder, "a.data"), os.path.join(folder, "b.data"))
        self.assertFalse(isListed(fd, "a.data"))
        self.assertTrue(isListed(fd, "b.data"))
        os.unlink(os.path.join(folder, "b.data"))
        self.assertFalse(isListed(fd, "b.data"))


class CloseReaderTests(SynchronousTestCase):
    def test_closes(self) -> None:
        """The descriptor is closed."""
        fd = os.open(os.path.abspath(self.mktemp()), os.O_RDWR | os.O_CREAT, 0o644)
        closeReader(fd)
        self.assertRaises(OSError, os.fstat, fd)

    def test_otherErrorsRaised(self) -> None:
        """Only "removed by another host" is let pass: closing a descriptor that is not open still fails."""
        fd = os.open(os.path.abspath(self.mktemp()), os.O_RDWR | os.O_CREAT, 0o644)
        os.close(fd)
        self.assertRaises(OSError, closeReader, fd)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /mnt/gluster rw,relatime shared:20 - fuse.glusterfs 127.1:/vol rw,user_id=0
41 22 0:36 / /mnt/glusterfs2 rw,relatime shared:21 - tmpfs tmpfs rw
42 40 0:37 / /mnt/gluster/inner\\040dir rw,relatime shared:22 - ext4 /dev/vdb rw
"""


class MountTypeTests(SynchronousTestCase):
    """
    L{mountType} and L{onFuse}: the zero-copy path stays off FUSE mounts.
    """

    def test_longestMountPoint(self) -> None:
        """The mount with the longest mount point holding the path names the type."""
        self.assertEqual(mountType("/mnt/gluster/root/a", MOUNTINFO), "fuse.glusterfs")
        self.assertEqual(mountType("/mnt/gluster", MOUNTINFO), "fuse.glusterfs")
        self.assertEqual(mountType("/mnt/glusterfs2/x", MOUNTINFO), "tmpfs")  # not a prefix by name only
        self.assertEqual(mountType("/mnt/gluster/inner dir/x", MOUNTINFO), "ext4")
        self.assertEqual(mountType("/srv/uploads", MOUNTINFO), "ext4")

    def test_nothingKnown(self) -> None:
        """No mount line for the path: no type."""
        self.assertIsNone(mountType("/srv", ""))
        self.assertIsNone(mountType("/srv", "garbage line\n"))

    def test_escapedMountPoints(self) -> None:
        """Mount points with a tab, a newline or a backslash (escaped as octal) are found."""
        info = (
            "30 1 0:30 / / rw - ext4 /dev/vda rw\n"
            "31 30 0:31 / /srv/a\\011b\\012c\\134d rw - nfs4 h:/x rw\n"
        )
        self.assertEqual(mountType("/srv/a\tb\nc\\d/up", info), "nfs4")
        self.assertEqual(mountType("/srv/a", info), "ext4")

    def test_fuseTypes(self) -> None:
        """FUSE types are FUSE; local, network and unknown ones are not."""
        self.assertTrue(onFuse("fuse.glusterfs"))
        self.assertTrue(onFuse("fuse"))
        for kind in ("ext4", "tmpfs", "nfs4", None):
            self.assertFalse(onFuse(kind), kind)

    def test_localFolderIsNotFuse(self) -> None:
        """A test's temporary folder (a local disk or tmpfs) is not FUSE: splicing stays on."""
        self.assertFalse(onFuse(rootMountType(self.mktemp().rsplit("/", 1)[0] or ".")))
