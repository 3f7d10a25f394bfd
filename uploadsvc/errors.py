"""
The one error family of uploadsvc.

Every refusal is an L{UploadError} carrying its HTTP status, a stable
machine-readable C{code} and a one-line human reason; the web layer maps it to
a response in exactly one place.
"""

from __future__ import annotations

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


class TooLarge(UploadError):
    status = 413


class Busy(UploadError):
    status = 503


class InsufficientStorage(UploadError):
    status = 507
