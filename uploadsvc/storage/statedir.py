"""
The server's own folder, C{<root>/.uploadsvc}, never reached through a link.

Its names are predictable (C{uploads/<xx>/<key>.data}), so anyone who can
write under the root could plant a symbolic link, a hard link or a FIFO
there, and a server that opened its staging files by path would read,
overwrite, append to or rename a file outside the root. So every folder here
is opened relative to its parent's descriptor with C{O_NOFOLLOW}, every file
with C{O_NOFOLLOW} and then checked to be a regular file with a single link,
and temp files get an unguessable name and C{O_EXCL}. Whatever does not fit
is refused with L{UnsafeState}: never followed, never repaired, since an
operator must find out who put it there. Blocking: call from the disk pool.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from typing import Any

from uploadsvc.errors import StorageUnavailable, UnsafeState
from uploadsvc.storage.freshness import GONE, closeReader, isListed
from uploadsvc.storage.syscalls import SYSTEM, SystemCalls

STATE_DIR = ".uploadsvc"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a planted FIFO must fail or return, never hang.
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: A C{.json} is a few hundred bytes; anything this large is not ours.
MAX_JSON = 64 * 1024
#: Opens and reads of a state file that another host keeps replacing
#: before the read is refused as a transient 503.
READ_TRIES = 3
#: Pauses (seconds) before a state file with a second name is looked at
#: again (a rename by another host under way), then refused.
LINK_PAUSES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


class CorruptState(ValueError):
    """
    A metadata file that is not a JSON object (cut short, or written by
    something else); its C{args[0]} says what and where.
    """


class StateDir:
    """
    The open folders of C{.uploadsvc} (the folder itself, C{uploads},
    C{takeover}) and its C{lock} file, each checked when opened.

    @ivar fd: C{.uploadsvc}.
    @ivar uploadsFD: C{.uploadsvc/uploads}, which holds the C{<xx>} folders.
    @ivar takeoverFD: C{.uploadsvc/takeover}, which holds takeover markers.
    @ivar lockFD: C{.uploadsvc/lock}, kept open so that L{lockPath} names it.
    """

    def __init__(self, rootFD: int, system: SystemCalls = SYSTEM) -> None:
        """
        Open (making what is missing) the state folder under C{rootFD}.

        @param system: makes the fsyncs.

        @raise UnsafeState: one of them is a link or not a folder (or file).
        """
        self.system = system
        opened: list[int] = []
        try:
            self.fd = _folder(rootFD, STATE_DIR, STATE_DIR, True)
            opened.append(self.fd)
            self.uploadsFD = _folder(self.fd, "uploads", STATE_DIR + "/uploads", True)
            opened.append(self.uploadsFD)
            self.takeoverFD = _folder(self.fd, "takeover", STATE_DIR + "/takeover", True)
            opened.append(self.takeoverFD)
            lockFD = openFile(self.fd, "lock", os.O_RDWR | os.O_CREAT, STATE_DIR + "/lock")
            assert lockFD is not None
            self.lockFD = lockFD
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        self._ids = self._held()

    def _held(self) -> list[tuple[int, int]]:
        return [_id(os.fstat(fd)) for fd in (self.fd, self.uploadsFD, self.takeoverFD, self.lockFD)]

    def close(self) -> None:
        for fd in (self.lockFD, self.takeoverFD, self.uploadsFD, self.fd):
            os.close(fd)

    def matches(self, rootFD: int) -> bool:
        """
        Whether the names under C{rootFD} still lead to what is held open: not
        so once a folder or the lock file was removed, renamed or swapped
        for a link (the root made anew, or a hand in C{.uploadsvc}).
        """
        try:
            now = [
                _id(os.lstat(STATE_DIR, dir_fd=rootFD)),
                _id(os.lstat("uploads", dir_fd=self.fd)),
                _id(os.lstat("takeover", dir_fd=self.fd)),
                _id(os.lstat("lock", dir_fd=self.fd)),
            ]
        except FileNotFoundError:
            return False
        return now == self._ids

    def lockPath(self, fallback: str) -> str:
        """
        A path that opens the checked C{lock} file itself, whatever its name
        leads to later (Linux's C{/proc/self/fd}, where each open makes an
        open file description of its own, as the byte-range locks need).

        @param fallback: the lock file's own path, used where there is no
            C{/proc}.
        """
        viaProc = f"/proc/self/fd/{self.lockFD}"
        return viaProc if os.path.exists(viaProc) else fallback

    def shard(self, name: str, create: bool, durable: bool = True) -> int | None:
        """
        Open the folder C{uploads/<name>}; the caller closes it.

        @param create: make it when missing.
        @param durable: fsync C{uploads} after making it, so that the files
            it will hold keep their path after a power loss.
        @return: L{None} when it is missing and C{create} is false.
        """
        try:
            return _folder(self.uploadsFD, name, f"{STATE_DIR}/uploads/{name}", False)
        except FileNotFoundError:
            if not create:
                return None
        try:
            os.mkdir(name, 0o755, dir_fd=self.uploadsFD)
        except FileExistsError:
            pass  # made by another upload meanwhile
        else:
            if durable:
                self.system.fsync(self.uploadsFD)
        return _folder(self.uploadsFD, name, f"{STATE_DIR}/uploads/{name}", False)

    def touchMarker(self, name: str) -> None:
        """
        Make (or keep) the empty takeover marker C{takeover/<name>}.
        """
        fd = openFile(
            self.takeoverFD, name, os.O_WRONLY | os.O_CREAT, f"{STATE_DIR}/takeover/{name}",
            checkLinks=False,  # nothing is ever written to a marker
        )
        assert fd is not None
        os.close(fd)

    def dropMarker(self, name: str) -> None:
        """
        Remove the takeover marker C{name} if there is one: only an empty
        regular file with one name (what L{touchMarker} makes).

        @raise UnsafeState: something else was planted there (a link, a
            hard link, a FIFO, a folder): left alone, for the operator.
        """
        try:
            st = os.stat(name, dir_fd=self.takeoverFD, follow_symlinks=False)
        except FileNotFoundError:
            return
        where = f"{STATE_DIR}/takeover/{name}"
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeState(f"{where} is {_describe(st.st_mode)}, not a takeover marker")
        if st.st_nlink != 1:
            raise UnsafeState(f"{where} has {st.st_nlink} names (a hard link)")
        try:
            os.unlink(name, dir_fd=self.takeoverFD)
        except FileNotFoundError:
            pass

    def markers(self) -> list[str]:
        """
        The names of the takeover markers (read through a descriptor of
        its own: a shared one would share its read position).
        """
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.takeoverFD)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)


def openFile(
    folderFD: int, name: str, flags: int, where: str, mode: int = 0o644,
    checkLinks: bool = True, system: SystemCalls = SYSTEM, listFirst: bool = True,
) -> int | None:
    """
    Open the file C{name} in C{folderFD} without following a link, and make
    sure it is a regular file with no other name.

    A file with a second name is looked at again after short pauses
    (L{LINK_PAUSES}, made by C{system}): on GlusterFS another host's rename
    (a C{.json} rewritten, a data file moved onto its destination) links
    the file at its new name before it unlinks the old one, so for a moment
    it has two. A second name that stays is refused.

    @param flags: the access mode, and C{O_CREAT} to make it when missing
        (C{O_TRUNC} is not allowed: truncate after the checks).
    @param where: the file's path for the operator's log.
    @param checkLinks: refuse a file with more than one name (a hard link
        would make the bytes of a file elsewhere those of an upload).
    @param system: makes the pauses and the listing.
    @param listFirst: open only a name the folder lists now (a shared file
        system, see L{uploadsvc.storage.freshness.isListed}); false where
        the root is on a local file system, whose name cache is never stale.
    @return: a blocking descriptor, or L{None} when the file is missing
        (or was removed as it was opened).
    @raise UnsafeState: it is a link, a folder, a FIFO, a device, or it
        has another name.
    """
    for pause in (*LINK_PAUSES, None):
        try:
            return _openOnce(
                folderFD, name, flags, where, mode, checkLinks, system if listFirst else None
            )
        except _ExtraNames as e:
            if pause is None:
                raise UnsafeState(f"{where} has {e.args[0]} names (a hard link)") from None
            system.sleep(pause)
    raise AssertionError("unreachable")


class _ExtraNames(Exception):
    """
    The file opened has more than one name (C{args[0]}: how many).
    """


def _openOnce(
    folderFD: int, name: str, flags: int, where: str, mode: int, checkLinks: bool,
    lister: SystemCalls | None,
) -> int | None:
    """
    L{openFile}, once.

    @param lister: lists the folder before the open; L{None}: not listed.

    @raise _ExtraNames: the file has more than one name (closed).
    """
    assert not flags & os.O_TRUNC
    exclusive = 0
    if lister is not None and not isListed(folderFD, name, lister):
        # Another host may have renamed it away or removed it, and this
        # host's name cache not know yet (see uploadsvc.storage.freshness).
        if not flags & os.O_CREAT:
            return None
        exclusive = os.O_EXCL & ~flags  # a lookup that no cached name answers
    try:
        try:
            fd = os.open(name, flags | exclusive | _FILE_FLAGS, mode, dir_fd=folderFD)
        except FileExistsError:
            if not exclusive:
                raise
            # Made by someone else since the folder was read: open that one.
            fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=folderFD)
        except OSError as e:
            if e.errno != errno.ESTALE or not flags & os.O_CREAT or exclusive:
                raise
            # The name this host cached leads to a file another host removed
            # after the folder was read: look it up afresh (O_EXCL), once.
            try:
                fd = os.open(name, flags | os.O_EXCL | _FILE_FLAGS, mode, dir_fd=folderFD)
            except FileExistsError:
                fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=folderFD)
    except FileNotFoundError:
        if flags & os.O_CREAT:
            raise
        return None
    except OSError as e:
        if e.errno == errno.ESTALE and not flags & os.O_CREAT:
            return None  # removed by another host as it was opened
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENODEV):
            raise UnsafeState(f"{where} is {_kind(folderFD, name)}, not a regular file") from e
        raise
    try:
        try:
            st = os.fstat(fd)
        except OSError as e:
            if e.errno != errno.ESTALE:
                raise
            # Removed (or replaced) by another host after this host looked
            # its name up: as removed as it was opened.
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeState(f"{where} is {_describe(st.st_mode)}, not a regular file")
        if st.st_nlink == 0:
            os.close(fd)
            return None
        if checkLinks and st.st_nlink != 1:
            raise _ExtraNames(st.st_nlink)
        checkOwner(st, where)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def checkStaged(fd: int, folderFD: int, name: str, where: str) -> os.stat_result:
    """
    Make sure that C{name} in C{folderFD} is still the file open as C{fd},
    with no other name, before the name is used (a rename).

    @return: C{fd}'s status.
    @raise UnsafeState: the name leads elsewhere, or the file has another
        name now.
    @raise FileNotFoundError: the file was removed.
    """
    st = os.fstat(fd)
    try:
        entry = os.lstat(name, dir_fd=folderFD)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the staged file was removed", where) from None
    if _id(entry) != _id(st):
        raise UnsafeState(f"{where} was replaced by {_describe(entry.st_mode)} while in use")
    if st.st_nlink != 1:
        raise UnsafeState(f"{where} has {st.st_nlink} names (a hard link)")
    return st


def readJSON(
    folderFD: int, name: str, where: str, system: SystemCalls = SYSTEM, listFirst: bool = True,
) -> dict[str, Any] | None:
    """
    Read the JSON object in the file C{name}; L{None} when there is none.

    On a shared file system another host may replace the file (a rename
    over it) or remove it between this host's open and its read, which then
    fails (C{ENOENT}, C{ESTALE}): it is opened afresh, up to L{READ_TRIES}
    times in all (a removed file is then missing).

    @param system: makes the reads.
    @param listFirst: see L{openFile}.
    @raise CorruptState: it is not a JSON object (or too large to be one of
        ours).
    @raise UnsafeState: see L{openFile}.
    @raise StorageUnavailable: it changed under every try (503: the
        client's next try finds it settled).
    """
    for _ in range(READ_TRIES):
        fd = openFile(folderFD, name, os.O_RDONLY, where, system=system, listFirst=listFirst)
        if fd is None:
            return None
        try:
            data = _readAll(fd, where, system)
        except OSError as e:
            if e.errno not in GONE:
                raise
            continue
        finally:
            closeReader(fd)
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise CorruptState(f"{where} is not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise CorruptState(f"{where} holds no JSON object")
        return value
    raise StorageUnavailable(
        "state-changing", "the upload changed on another server as it was read; try again",
        f"{where} was replaced or removed as it was read, {READ_TRIES} times", retryAfter=1,
    )


def _readAll(fd: int, where: str, system: SystemCalls) -> bytes:
    """
    The whole content of a state file.

    @raise CorruptState: it is larger than L{MAX_JSON}.
    """
    pieces = []
    size = 0
    while size <= MAX_JSON:
        piece = system.read(fd, MAX_JSON + 1 - size)
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    if size > MAX_JSON:
        raise CorruptState(f"{where} is larger than {MAX_JSON} bytes")
    return b"".join(pieces)


def writeJSON(
    folderFD: int, name: str, value: dict[str, Any], fsync: bool, system: SystemCalls = SYSTEM
) -> None:
    """
    Replace the file C{name} with C{value} as JSON, atomically: a temp file
    of a name of its own (so that two writers never share one), fsync,
    rename, folder fsync.

    @param system: makes the fsyncs and the rename.
    """
    data = json.dumps(value).encode("utf-8")
    tmp = f"{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
        dir_fd=folderFD,
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                system.fsync(fd)
        finally:
            os.close(fd)
        system.replace(tmp, name, src_dir_fd=folderFD, dst_dir_fd=folderFD)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=folderFD)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        system.fsync(folderFD)


def unlinkFile(folderFD: int, name: str, where: str) -> bool:
    """
    Remove the regular file C{name}; whether there was one.

    @raise UnsafeState: it is a link, or anything but a regular file with
        one name (left for the operator to see).
    """
    try:
        st = os.lstat(name, dir_fd=folderFD)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeState(f"{where} is {_describe(st.st_mode)}, not a regular file")
    if st.st_nlink != 1:
        raise UnsafeState(f"{where} has {st.st_nlink} names (a hard link)")
    try:
        os.unlink(name, dir_fd=folderFD)
    except FileNotFoundError:
        return False
    return True


def _folder(parentFD: int, name: str, where: str, create: bool) -> int:
    """
    Open the folder C{name} in C{parentFD} without following a link.

    @param create: make it when missing.
    @raise FileNotFoundError: it is missing and C{create} is false.
    @raise UnsafeState: it is a link or not a folder.
    """
    for _ in range(2):
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parentFD)
            break
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parentFD)
            except FileExistsError:
                pass
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeState(f"{where} is {_kind(parentFD, name)}, not a folder") from e
            raise
    else:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parentFD)
    try:
        checkOwner(os.fstat(fd), where)
    except BaseException:
        os.close(fd)
        raise
    return fd


def checkOwner(st: os.stat_result, where: str) -> None:
    """
    Make sure the server's own user owns a folder or file of its state, and
    that no other user may write it. Whoever may write under the root could
    otherwise put a state folder of their own in its place (or plant a
    staged upload and its metadata), and have the server complete files of
    their choosing into folders they cannot write themselves.

    @raise UnsafeState: it belongs to another user, or its group or others
        may write it.
    """
    me = os.geteuid()
    if st.st_uid != me:
        raise UnsafeState(f"{where} belongs to uid {st.st_uid}, not to this server's (uid {me})")
    if st.st_mode & 0o022:
        raise UnsafeState(f"{where} may be written by other users (mode {stat.S_IMODE(st.st_mode):o})")


def _id(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _kind(folderFD: int, name: str) -> str:
    try:
        return _describe(os.lstat(name, dir_fd=folderFD).st_mode)
    except OSError:
        return "not openable"


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file"
