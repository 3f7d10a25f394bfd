"""
tus 1.0.0 (docs/protocol-tus.md, section 8 of the protocol): which URL names
what, and the decisions of creation and PATCH requests, from the header
values read by L{uploadsvc.protocol.tusheaders}.

Pure, like the rest of L{uploadsvc.protocol}: functions of header values and
small frozen values, raising the L{UploadError} tus gives each case: C{412}
for another protocol version, C{400} for a malformed header, C{409} for an
offset that is not the upload's, C{413} past the maximum or the upload's
length.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import attrs

from uploadsvc.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.paths import UploadPath
from uploadsvc.protocol.tusheaders import (
    CHECKSUMS, EXTENSIONS, ID, ROOT, VERSION, Checksum, Concat, Final, Metadata, Partial,
    checkContentType, checkResumable, headerValue, metadataDestination, parseChecksum,
    parseConcat, parseDeferLength, parseMetadata, parseNumber, parseOptionalNumber,
)


def parseTarget(rest: bytes) -> str | None:
    """
    What a path under C{/.tus} names: L{None} for the collection
    (C{/.tus/}, where uploads are created), or an upload id's text.

    @raise NotFound: C{no-upload}, for any other path.
    """
    if rest in (b"", b"/"):
        return None
    found = re.fullmatch(b"/(" + ID + b")", rest)
    if found is None:
        raise NotFound("no-upload", "there is no such upload")
    return found.group(1).decode("ascii")


def tusPath(rawPath: bytes, prefix: bytes) -> bytes | None:
    """
    The part of a raw request path after C{<prefix>/.tus}, or L{None} when
    the request is not for tus.
    """
    root = prefix.rstrip(b"/") + ROOT
    if rawPath == root or rawPath.startswith(root + b"/"):
        return rawPath[len(root):]
    return None


@attrs.frozen
class Creation:
    """
    A creation request, decided from its headers.

    @ivar total: C{Upload-Length}; for a final concatenation, unknown until
        the parts are looked at (L{None}).
    @ivar deferred: C{Upload-Defer-Length: 1}.
    @ivar destination: from the metadata; L{None}: C{incoming/<id>}.
    """

    total: int | None
    deferred: bool
    metadata: Metadata
    concat: Concat | None
    destination: UploadPath | None


def decideCreation(
    headers: Any, prefix: bytes, maxUploadSize: int, publicPrefix: bytes | None = None
) -> Creation:
    """
    Decide a creation (C{POST /.tus/}) from its headers, refusing in this
    order: C{412} (version), C{400} (lengths, metadata, concatenation,
    destination), C{413} (size).

    @param publicPrefix: the path a trusted proxy serves the server under
        (its part URLs of a concatenation may use it).
    """
    checkResumable(headerValue(headers, b"Tus-Resumable"))
    total = parseOptionalNumber(headerValue(headers, b"Upload-Length"), "Upload-Length")
    deferred = parseDeferLength(headerValue(headers, b"Upload-Defer-Length"))
    metadata = parseMetadata(headerValue(headers, b"Upload-Metadata"))
    concat = parseConcat(headerValue(headers, b"Upload-Concat"), prefix, publicPrefix)
    if isinstance(concat, Final):
        if total is not None or deferred:
            raise BadRequest(
                "bad-length", "a final concatenation takes its length from its parts"
            )
    elif (total is None) == (not deferred):
        raise BadRequest(
            "bad-length", "send either Upload-Length or Upload-Defer-Length: 1"
        )
    destination = None if isinstance(concat, Partial) else metadataDestination(metadata, prefix)
    if total is not None and total > maxUploadSize:
        raise TooLarge("too-large", f"uploads are limited to {maxUploadSize} bytes")
    return Creation(total, deferred, metadata, concat, destination)


@attrs.frozen
class PatchHeaders:
    """
    What a C{PATCH} tells, read from its headers.

    @ivar total: C{Upload-Length} (for an upload whose length was deferred).
    """

    offset: int
    total: int | None
    checksum: Checksum | None


def readPatch(headers: Any) -> PatchHeaders:
    """
    Read a C{PATCH}'s headers, refusing in this order: C{412} (version),
    C{415} (content type), C{400} (offset, length, checksum).
    """
    checkResumable(headerValue(headers, b"Tus-Resumable"))
    checkContentType(headerValue(headers, b"Content-Type"))
    offset = headerValue(headers, b"Upload-Offset")
    if offset is None:
        raise BadRequest("bad-upload-offset", "a tus PATCH carries Upload-Offset")
    return PatchHeaders(
        parseNumber(offset, "Upload-Offset"),
        parseOptionalNumber(headerValue(headers, b"Upload-Length"), "Upload-Length"),
        parseChecksum(headerValue(headers, b"Upload-Checksum")),
    )


def planPatch(
    stored: Stored, patch: PatchHeaders, length: int | None, isFinal: bool = False
) -> Plan:
    """
    Decide a C{PATCH} against what is stored (under the upload's lock).

    @param length: the body's C{Content-Length}; L{None} when chunked.
    @param isFinal: the upload is a final concatenation (never patched).
    @raise Forbidden: C{403} for a final concatenation.
    @raise BadRequest: an C{Upload-Length} that differs from the known one.
    @raise Conflict: C{409}, the offset is not the upload's (with the
        right C{Upload-Offset}).
    @raise TooLarge: C{413}, the body would pass the upload's length.
    """
    if isFinal:
        raise Forbidden("final-upload", "a final concatenation is not patched")
    if not stored.incomplete:
        raise NotFound("no-upload", "there is no such upload")
    total = stored.total
    if patch.total is not None:
        if total is not None and patch.total != total:
            raise BadRequest("length-mismatch", f"the upload's length is {total}, not {patch.total}")
        if patch.total < stored.offset:
            raise BadRequest("length-below-offset", "Upload-Length is below the upload's offset")
        total = patch.total
    if patch.offset != stored.offset:
        raise Conflict(
            "offset-mismatch", f"upload offset is {stored.offset}, not {patch.offset}",
            {b"Upload-Offset": b"%d" % stored.offset},
        )
    take = length
    if total is not None:
        room = total - stored.offset
        if length is not None and length > room:
            raise TooLarge("exceeds-length", f"the body passes the upload's length {total}")
        take = room if length is None else length
    return Plan(False, stored.offset, 0, take, total)


def declaredEnd(patch: PatchHeaders, length: int | None, total: int | None) -> int | None:
    """
    The largest size a C{PATCH}'s headers claim for its upload (what
    C{--max-upload-size} is checked against before the body): its end
    (C{Upload-Offset} + C{Content-Length}), the C{Upload-Length} it tells a
    deferred upload, the upload's known length.
    """
    claims = [
        end for end in (
            None if length is None else patch.offset + length, patch.total, total,
        ) if end is not None
    ]
    return max(claims, default=None)


def isFinal(concat: str | None) -> bool:
    """
    Whether an upload's stored C{Upload-Concat} makes it a final
    concatenation (never patched).
    """
    return concat is not None and concat.startswith("final")


def retriesCompleted(size: int, patch: PatchHeaders, length: int | None) -> bool:
    """
    Whether a C{PATCH} of an upload completed at C{size} is a retry of the
    request that completed it (its answer lost): it ends there (a chunked
    body: it starts there) and tells no other length. Its body is not
    checked (the upload is no longer staged).
    """
    return patch.total in (None, size) and patch.offset + (length or 0) == size


#: Headers of the other protocols that the app's shared write path puts on
#: its refusals (the draft's C{Upload-Complete} and limits, section 3's
#: C{Range}), never sent in a tus answer.
FOREIGN_HEADERS = (b"Upload-Complete", b"Range", b"Upload-Limit", b"Upload-Draft-Interop-Version")


def methodOf(method: bytes, override: bytes | None) -> bytes:
    """
    The method a tus request means: a C{POST} may carry
    C{X-HTTP-Method-Override} (for clients that can send only C{GET} and
    C{POST}).
    """
    if method == b"POST" and override is not None:
        return override.strip().upper()
    return method


def allowedMethods(collection: bool) -> Sequence[bytes]:
    """
    The methods of the collection (creation) or of one upload.
    """
    if collection:
        return (b"POST", b"OPTIONS")
    return (b"HEAD", b"PATCH", b"DELETE", b"OPTIONS")


def optionsHeaders(maxUploadSize: int) -> Mapping[bytes, bytes]:
    """
    What C{OPTIONS} tells a client about this server's tus.
    """
    return {
        b"Tus-Version": VERSION,
        b"Tus-Extension": b",".join(EXTENSIONS),
        b"Tus-Max-Size": b"%d" % maxUploadSize,
        b"Tus-Checksum-Algorithm": ",".join(CHECKSUMS).encode("ascii"),
    }


def concatHeader(parts: Sequence[str], prefix: bytes) -> bytes:
    """
    C{Upload-Concat} of a final upload, as C{HEAD} echoes it.
    """
    root = prefix.rstrip(b"/") + ROOT
    return b"final;" + b" ".join(root + b"/" + part.encode("ascii") for part in parts)

