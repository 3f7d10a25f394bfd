"""
How the client sorts what went wrong: try again, or stop with a clear
message.

A dropped, refused, reset or stalled connection and a 5xx answer are
L{Retryable}; a refusal that will not change by trying again (4xx, a bad TLS
certificate, a local read error) is L{Fatal}. L{classifyFailure} turns
whatever treq and Twisted raise into one of the two, digging the real cause
out of Twisted's wrapper exceptions so the message names it.

Only Twisted's public names are used: the wrappers are the exceptions
C{twisted.web.client} exports (L{WRAPPERS}), each with its causes in
C{.reasons}; tests/test_client_twisted.py fails, naming the attribute, if a
Twisted release renames one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
)

#: Twisted's public exceptions that wrap the failures that caused them (in
#: their C{reasons} list): L{ResponseFailed} (and its subclass
#: C{ResponseNeverReceived}), L{RequestTransmissionFailed} and
#: L{RequestGenerationFailed}.
WRAPPERS: tuple[type[Exception], ...] = (
    ResponseFailed,
    RequestTransmissionFailed,
    RequestGenerationFailed,
)


class Retryable(Exception):
    """
    An attempt failed in a way that trying again may fix.

    @ivar reason: one line for the user.
    @ivar retryAfter: a minimum delay the server asked for, in seconds.
    """

    def __init__(self, reason: str, retryAfter: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryAfter = retryAfter


class Fatal(Exception):
    """
    The upload cannot succeed by trying again.

    @ivar reason: one line for the user.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OffsetConflict(Exception):
    """
    The server answered C{409} with its offset: continue from there.

    @ivar offset: the server's C{Upload-Offset}.
    """

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _causes(failure: Failure) -> list[Failure]:
    """
    The innermost failures inside Twisted's wrapper exceptions
    (L{WRAPPERS}), nested or not (at most 50 looked at).
    """
    found: list[Failure] = []
    pending = [failure]
    for _ in range(50):
        if not pending:
            break
        f = pending.pop(0)
        value = f.value
        if isinstance(value, WRAPPERS) and value.reasons:  # type: ignore[attr-defined]
            pending.extend(r for r in value.reasons if isinstance(r, Failure))  # type: ignore[attr-defined]
        else:
            found.append(f)
    return found or [failure]


def _tlsProblem(failure: Failure, host: str) -> str | None:
    """
    A description of a certificate problem inside C{failure}, if that is
    what it is.
    """
    from OpenSSL import SSL
    from service_identity import CertificateError, VerificationError

    from uploadsvc.client.tls import CertificateRefused

    value = failure.value
    if isinstance(value, CertificateRefused):
        return value.reason
    if isinstance(value, (VerificationError, CertificateError)):
        return f"the certificate does not match the host name {host!r}"
    if isinstance(value, SSL.Error):
        parts = []
        for item in value.args[0] if value.args and isinstance(value.args[0], list) else []:
            if isinstance(item, tuple) and item:
                parts.append(str(item[-1]))
        detail = ", ".join(p for p in parts if p) or str(value)
        return f"TLS handshake failed: {detail}"
    return None


def _describe(failure: Failure) -> str:
    value = failure.value
    if isinstance(value, ierror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, ierror.ConnectionLost):
        return "connection lost"
    if isinstance(value, ierror.ConnectionDone):
        return "connection closed by the other side"
    if isinstance(value, (ierror.TimeoutError, ierror.TCPTimedOutError)):
        return "connection timed out"
    if isinstance(value, ierror.DNSLookupError):
        return f"host name lookup failed ({value})"
    text = str(value).strip().splitlines()
    return f"{type(value).__name__}: {text[0] if text else ''}".rstrip(": ")


def classifyFailure(failure: Failure, url: str) -> Retryable | Fatal:
    """
    Sort a failed request into L{Retryable} or L{Fatal}.

    A certificate that fails verification is fatal, never retried: there is
    no silent fallback to an unverified connection.
    """
    if failure.check(Retryable, Fatal):
        return failure.value  # type: ignore[return-value]
    causes = _causes(failure)
    for cause in causes:
        problem = _tlsProblem(cause, urlsplit(url).hostname or "")
        if problem is not None:
            return Fatal(f"TLS certificate verification failed for {url}: {problem}")
    for cause in causes:
        if cause.check(
            ierror.ConnectError,
            ierror.ConnectionLost,
            ierror.ConnectionDone,
            ierror.TimeoutError,
            ierror.DNSLookupError,
            ConnectionError,
            CancelledError,
        ):
            return Retryable(_describe(cause))
    for cause in causes:
        if isinstance(cause.value, OSError):
            # Not a network error: reading the local file failed.
            return Fatal(f"reading the file failed: {cause.value}")
    # Anything else from the HTTP machinery (a parse error of a garbled
    # answer, for instance) may well be the link's fault: try again, the
    # give-up policy bounds it.
    return Retryable(_describe(causes[0]))
