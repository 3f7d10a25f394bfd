"""
How uploadsvc answers: refusals, status answers and completions, each written
onto a twisted.web request in one place (docs/protocol.md sections 2, 3 and 6).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import attrs

from uploadsvc.errors import UploadError
from uploadsvc.protocol.decisions import Stored, offsetHeaders
from uploadsvc.protocol.digests import formatDigest
from uploadsvc.protocol.ietf import problemBody
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.web.forwarded import absoluteURL


#: Reason phrases of statuses that twisted.web does not know.
_PHRASES = {460: b"Checksum Mismatch"}


def refuse(request: Any, error: UploadError) -> bytes:
    """
    Answer C{error}: its status and headers, and its reason as one line of
    text. (A refusal sent before the body was read also closes the
    connection: see L{uploadsvc.web.streaming}.)
    """
    request.setResponseCode(error.status, _PHRASES.get(error.status))
    for name, value in error.headers.items():
        request.setHeader(name, value)
    if error.status == 503 and b"Retry-After" not in error.headers:
        request.setHeader(b"Retry-After", b"1")
    problem = problemBody(error)
    if problem is not None:
        # The resumable-upload draft's refusals: an RFC 9457 document.
        request.setHeader(b"Content-Type", b"application/problem+json")
        request.setHeader(b"Content-Length", b"%d" % len(problem))
        return problem
    body = error.reason.encode("utf-8") + b"\n"
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def status(request: Any, stored: Stored, forPut: bool) -> bytes:
    """
    Answer a status query: C{204} with the offset of an incomplete upload,
    C{200} for a complete file (its size as C{Content-Length} for C{HEAD},
    no body for a C{PUT} query).
    """
    request.setHeader(b"Cache-Control", b"no-store")
    if stored.incomplete:
        request.setResponseCode(204)
        for name, value in offsetHeaders(stored.offset).items():
            request.setHeader(name, value)
        if stored.total is not None:
            request.setHeader(b"Upload-Length", b"%d" % stored.total)
        return b""
    size = stored.completeSize
    assert size is not None
    request.setResponseCode(200)
    request.setHeader(b"Upload-Complete", b"?1")
    request.setHeader(b"Upload-Offset", b"%d" % size)
    request.setHeader(b"Content-Length", b"0" if forPut else b"%d" % size)
    return b""


def progress(request: Any, offset: int, total: int | None) -> bytes:
    """
    Answer a write that left the upload incomplete: C{204} and where to go on.
    """
    request.setResponseCode(204)
    for name, value in offsetHeaders(offset).items():
        request.setHeader(name, value)
    if total is not None:
        request.setHeader(b"Upload-Length", b"%d" % total)
    return b""


def completed(request: Any, path: UploadPath, size: int, sha256: bytes, code: int) -> bytes:
    """
    Answer a completed upload: C{201} (new) or C{200} (replaced, or a retried
    final request), with its digest and a short JSON body.
    """
    request.setResponseCode(code)
    request.setHeader(b"Upload-Offset", b"%d" % size)
    request.setHeader(b"Upload-Complete", b"?1")
    request.setHeader(b"Location", absoluteURL(request, path.location))
    request.setHeader(b"Repr-Digest", formatDigest("sha-256", sha256))
    body = json.dumps({"path": path.relative, "size": size, "sha256": sha256.hex()}).encode(
        "utf-8"
    )
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


@attrs.frozen
class Answers:
    """
    How a front end answers the end of a write: C{progress(request, offset,
    total)} when the upload is still incomplete, C{completed(request, path,
    size, sha256, code)} when it was moved into place. Path PUTs answer as
    above; tus and the draft have answers of their own.
    """

    progress: Callable[[Any, int, "int | None"], bytes]
    completed: Callable[[Any, UploadPath, int, bytes, int], bytes]


PUT_ANSWERS = Answers(progress, completed)
