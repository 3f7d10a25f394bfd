"""
Complete files at their destinations under the root, reached without
following a link: what is at a path, digests of a complete file, and its
removal. Staged uploads are L{uploadsvc.storage.filestore}'s. Blocking:
call from the disk pool.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterable

from zope.interface import implementer

from uploadsvc.errors import Conflict
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.storage.hashing import hashFD
from uploadsvc.storage.interfaces import ICompleteFile
from uploadsvc.storage.safepath import fsyncFolder, lstatAt, openParent
from uploadsvc.storage.syscalls import SYSTEM, SystemCalls


def entry(rootFD: int, path: UploadPath, strict: bool) -> tuple[int | None, Conflict | None]:
    """
    What is at C{path}: the size of the entry there, if any, and with
    C{strict}, the refusal to give if it is not a regular file (a link, a
    FIFO) and no upload is staged for the path.

    @raise Forbidden: the path crosses a symbolic link.
    @raise Conflict: a parent of the path is a file, or the path is a folder.
    """
    completeSize = None
    oddEntry = None
    parentFD = openParent(rootFD, path.components[:-1], create=False)
    if parentFD is not None:
        try:
            st = lstatAt(parentFD, path.components[-1])
        finally:
            os.close(parentFD)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise Conflict("is-folder", f"{path.relative!r} is a folder")
            if strict and not stat.S_ISREG(st.st_mode):
                oddEntry = notAFile(path, st)
            completeSize = st.st_size
    return completeSize, oddEntry


def hashFile(rootFD: int, path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
    """
    Digest the complete file at C{path} (a retried final request).

    @raise FileNotFoundError: there is none.
    @raise Conflict: the entry there is a link or not a regular file.
    """
    fd, _ = _openRegular(rootFD, path)
    try:
        return hashFD(fd, algorithms)
    finally:
        os.close(fd)


def _openRegular(rootFD: int, path: UploadPath) -> tuple[int, os.stat_result]:
    """
    Open the regular file at C{path} for reading, no link followed on the
    way or at the end; the caller closes the descriptor.

    @raise FileNotFoundError: there is none.
    @raise Conflict: the entry there is a folder, a link or not a regular file.
    """
    parentFD = openParent(rootFD, path.components[:-1], create=False)
    if parentFD is None:
        raise FileNotFoundError(path.relative)
    try:
        name = path.components[-1]
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=parentFD,
            )
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise notAFile(path, os.lstat(name, dir_fd=parentFD)) from None
    finally:
        os.close(parentFD)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise Conflict("is-folder", f"{path.relative!r} is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise notAFile(path, st)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


@implementer(ICompleteFile)
class OpenFile:
    """
    A complete file on disk opened for a download: reads by position
    (C{pread}), so that nothing is shared between readers.
    """

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self._fd: int | None = fd
        self.size = st.st_size
        self.modified = int(st.st_mtime)
        # A replacement is a rename (a new inode); a rewrite in place
        # changes the size or the time. The device is left out: it differs
        # between hosts mounting one NFS root.
        self.version = "%x-%x-%x" % (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise ValueError("read from a closed file")
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def openFile(rootFD: int, path: UploadPath) -> OpenFile:
    """
    Open the complete file at C{path} for a download.

    @raise FileNotFoundError: there is none.
    @raise Conflict: the entry there is a folder, a link or not a regular file.
    """
    return OpenFile(*_openRegular(rootFD, path))


def deleteFile(
    rootFD: int, path: UploadPath, fsync: bool, system: SystemCalls = SYSTEM
) -> bool:
    """
    Remove a complete file (only when the server allows deletes): a
    regular file, never a link or another kind of entry.
    """
    parentFD = openParent(rootFD, path.components[:-1], create=False)
    if parentFD is None:
        return False
    try:
        st = lstatAt(parentFD, path.components[-1])
        if st is None:
            return False
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise notAFile(path, st)
        try:
            os.unlink(path.components[-1], dir_fd=parentFD)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise Conflict("is-folder", f"{path.relative!r} is a folder")
        if fsync:
            fsyncFolder(parentFD, system)
        return True
    finally:
        os.close(parentFD)


def notAFile(path: UploadPath, st: os.stat_result) -> Conflict:
    """
    The refusal for an entry at the destination that is no uploaded file:
    a symbolic link (never followed) or a FIFO, socket or device.
    """
    if stat.S_ISLNK(st.st_mode):
        return Conflict("is-link", f"{path.relative!r} is a symbolic link, not an uploaded file")
    return Conflict("not-a-file", f"{path.relative!r} is not a regular file")
