"""
The one error family of uploadsvc.

Every refusal is an L{UploadError} carrying its HTTP status, a stable
machine-readable C{code} and a one-line human reason; the web layer maps it to
a response in exactly one place.
"""

from __future__ import annotations

import errno
from typing import Mapping


class UploadError(Exception):
    """
    A request that uploadsvc refuses, with the status to answer it with.

    @ivar status: the HTTP status code.
    @ivar code: a short stable identifier, e.g. C{"bad-path"}.
    @ivar reason: one line of text for the client.
    @ivar headers: extra response headers (e.g. C{Upload-Offset} on a 409).
    """

    status: int = 500

    def __init__(
        self,
        code: str,
        reason: str,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.headers: dict[bytes, bytes] = dict(headers or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.code}: {self.reason}>"


class BadRequest(UploadError):
    status = 400


class Unauthorized(UploadError):
    status = 401


class Forbidden(UploadError):
    status = 403


class NotFound(UploadError):
    status = 404


class MethodNotAllowed(UploadError):
    status = 405


class Conflict(UploadError):
    status = 409


class Gone(UploadError):
    status = 410


class PreconditionFailed(UploadError):
    """
    A protocol version the server does not speak (tus C{Tus-Resumable}).
    """

    status = 412


class UnsupportedMediaType(UploadError):
    status = 415


class ChecksumMismatch(UploadError):
    """
    tus checksum extension: the chunk's C{Upload-Checksum} does not match
    its bytes (nothing of it is kept).
    """

    status = 460


class TooLarge(UploadError):
    status = 413


class Busy(UploadError):
    status = 503


class InsufficientStorage(UploadError):
    status = 507


class StorageFault(UploadError):
    """
    The server cannot do its part because of its own storage, not because of
    the request: answered with a one-line reason, and logged (one line, with
    C{detail}) for the operator, without a traceback.

    @ivar detail: what the operator needs to know (paths, the system's
        message); never sent to the client.
    """

    status = 500

    def __init__(
        self,
        code: str,
        reason: str,
        detail: str = "",
        headers: Mapping[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(code, reason, headers)
        self.detail = detail or reason


class UnsafeState(StorageFault):
    """
    A symbolic link, a hard link, a file of the wrong kind or another
    user's file in the server's own folder (C{.uploadsvc}): planted by
    someone who can write under the root. It is refused, never followed or
    repaired; an operator must look.
    """

    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(
            "unsafe-state",
            "the server's upload state holds a link or an unexpected file; "
            "an operator must remove it",
            detail,
        )


class StorageUnavailable(StorageFault):
    """
    The storage cannot be written now (read-only, not permitted, its folder
    gone): nothing stored is lost, and a later try may succeed.
    """

    status = 503

    def __init__(self, code: str, reason: str, detail: str = "", retryAfter: int = 60) -> None:
        super().__init__(code, reason, detail, {b"Retry-After": b"%d" % retryAfter})


def storageRefusal(error: BaseException) -> UploadError | None:
    """
    The refusal due for an error of the storage that is no fault of the
    server's code: a full disk or inode table (C{507}), a read-only or
    forbidden folder, too many open files, a mount whose file system
    client is gone (C{503}). L{None} for anything else (a bug: 500 with a
    traceback).
    """
    if not isinstance(error, OSError) or error.errno is None:
        return None
    detail = f"{error.strerror}: {error.filename}" if error.filename else str(error.strerror)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("no-space", "the disk is full (no space or no free inodes)")
    if error.errno == errno.EROFS:
        return StorageUnavailable("read-only", "the storage is read-only", detail)
    if error.errno in (errno.EMFILE, errno.ENFILE):
        # Every upload in progress holds a socket, its data file and its
        # lock: the descriptor limit is a load limit like --max-uploads.
        return StorageUnavailable(
            "too-many-open-files", "the server has too many files open", detail, retryAfter=1
        )
    if error.errno == errno.ENOTCONN:
        # "Transport endpoint is not connected": a FUSE mount (GlusterFS)
        # whose client process died. Nothing stored is lost; the operator
        # remounts, and a retry after that goes on where the upload stood.
        return StorageUnavailable(
            "storage-not-connected", "the server's storage is not connected", detail,
            retryAfter=10,
        )
    if error.errno == errno.EXDEV:
        # The state folder on another file system than the destination.
        return StorageFault(
            "cross-device", "the server's storage spans file systems; an operator must fix it",
            detail,
        )
    if error.errno in (errno.EACCES, errno.EPERM):
        return StorageUnavailable(
            "not-permitted", "the server is not permitted to write to its storage", detail
        )
    return None
