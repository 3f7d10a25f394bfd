"""
Walking a client's path inside the root without ever following a link.

Every folder is opened relative to its parent's descriptor with
C{O_NOFOLLOW | O_DIRECTORY}, so a symbolic link anywhere on the way, planted
before or after the server started, stops the walk instead of leading it out
of the root. Blocking: call from the disk thread pool.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Sequence

from uploadsvc.errors import Conflict, Forbidden
from uploadsvc.storage.syscalls import SYSTEM, SystemCalls

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def openRoot(root: str) -> int:
    """
    Open the storage root itself (which may be reached through links: it is
    the operator's choice, not the client's).
    """
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def openParent(
    rootFD: int,
    folders: Sequence[str],
    create: bool,
    durable: bool = False,
    system: SystemCalls = SYSTEM,
) -> int | None:
    """
    Open the folder that will hold a file, relative to C{rootFD}.

    @param folders: the path's components but the last.
    @param create: make missing folders (mode 0o755).
    @param durable: fsync each folder that gets a new folder, so that the
        path to a completed file survives a power loss.
    @param system: makes the fsyncs.
    @return: a descriptor the caller closes, or L{None} when a folder is
        missing and C{create} is false.
    @raise Forbidden: a component is a symbolic link.
    @raise Conflict: a component is an existing file.
    """
    fd = os.dup(rootFD)
    try:
        for name in folders:
            try:
                nextFD = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # raced with another upload; open it below
                else:
                    if durable:
                        system.fsync(fd)
                nextFD = _openFolder(fd, name)
            except OSError as e:
                _refuse(fd, name, e)
                raise
            os.close(fd)
            fd = nextFD
        return fd
    except BaseException:
        os.close(fd)
        raise


def _openFolder(parentFD: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parentFD)
    except OSError as e:
        _refuse(parentFD, name, e)
        raise


def _refuse(parentFD: int, name: str, error: OSError) -> None:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        st = os.lstat(name, dir_fd=parentFD)
        if stat.S_ISLNK(st.st_mode):
            raise Forbidden("symlink", f"path crosses a symbolic link at {name!r}")
        raise Conflict("parent-is-file", f"{name!r} is a file, not a folder")


def lstatAt(parentFD: int, name: str) -> os.stat_result | None:
    """
    C{lstat} of C{name} in the folder C{parentFD}, L{None} when absent.
    """
    try:
        return os.lstat(name, dir_fd=parentFD)
    except FileNotFoundError:
        return None


def fsyncFolder(fd: int, system: SystemCalls = SYSTEM) -> None:
    """
    Make a rename or unlink in the folder C{fd} durable.
    """
    system.fsync(fd)
