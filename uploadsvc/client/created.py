"""
The decisions that tus and the draft share, sans IO: reading the answers
about an upload the server names at its creation (its URL from the
creation's answer, its offset from C{HEAD} on that URL). Each protocol's
own decisions are in L{uploadsvc.client.tus} and L{uploadsvc.client.ietf};
the loop that asks is L{uploadsvc.client.fileupload.CreatedUpload}.
"""

from __future__ import annotations

from urllib.parse import urljoin

from uploadsvc.client.decisions import Answer, refusal
from uploadsvc.client.errors import Fatal


def readCreated(answer: Answer, creationURL: str, size: int, sendsCredentials: bool) -> str:
    """
    Read the answer to the creation of an upload that the server names (tus,
    the draft): the upload's URL, its C{Location} resolved against the
    creation's URL.

    @raise Fatal: the server refused (e.g. C{409}: a complete file is
        there), or answered C{201} without a C{Location}.
    @raise Retryable: for an answer worth another attempt.
    """
    if answer.code == 201:
        location = answer.header(b"Location")
        if location is None:
            raise Fatal("the server created the upload but sent no Location")
        return urljoin(creationURL, location.decode("latin-1"))
    raise refusal(answer, size, sendsCredentials)


def readResourceOffset(answer: Answer, size: int, sendsCredentials: bool) -> int | None:
    """
    Read the answer to C{HEAD} on the URL of an upload the server named
    (tus, the draft): its offset, or L{None} when the upload is gone
    (completed, expired, removed: C{404}/C{410}).

    @raise Fatal: the upload is of another length, holds more than the
        file, or the server refused.
    @raise Retryable: for an answer worth another attempt.
    """
    if answer.code in (404, 410):
        return None
    if answer.code in (200, 204):
        offset = answer.intHeader(b"Upload-Offset")
        if offset is None:
            raise Fatal("the server did not report an Upload-Offset")
        total = answer.intHeader(b"Upload-Length")
        if total is not None and total != size:
            raise Fatal(f"the server's upload is of {total} bytes; the file has {size}")
        if offset > size:
            raise Fatal(f"the server holds {offset} bytes; the file has {size}")
        return offset
    raise refusal(answer, size, sendsCredentials)
