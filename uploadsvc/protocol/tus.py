"""
tus 1.0.0 (docs/protocol-tus.md, section 8 of the protocol): its header parsers
and the decisions of its requests.

Pure, like the rest of L{uploadsvc.protocol}: functions of header values and
small frozen values. Every parser rejects rather than repairs (full-match
patterns, capped digit counts) and raises one of the L{UploadError} family
with the status tus gives it: C{412} for another protocol version, C{400}
for a malformed header, C{409} for an offset that is not the upload's,
C{413} past the maximum or the upload's length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Callable, Mapping, Sequence, Union

import attrs

from uploadsvc.errors import (
    BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed, TooLarge,
    UnsupportedMediaType,
)
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.paths import UploadPath, parseRelativePath

#: The one version spoken, as C{Tus-Resumable} and C{Tus-Version} carry it.
VERSION = b"1.0.0"

#: The extensions served, as C{Tus-Extension} lists them.
EXTENSIONS = (
    b"creation", b"creation-with-upload", b"creation-defer-length", b"termination",
    b"checksum", b"expiration", b"concatenation",
)

#: C{Upload-Checksum} algorithms: name to (constructor, digest length).
CHECKSUMS: dict[str, tuple[Callable[[], Any], int]] = {
    "sha1": (hashlib.sha1, 20),
    "sha256": (hashlib.sha256, 32),
    "md5": (hashlib.md5, 16),
}

#: The content type of a tus PATCH body.
OFFSET_STREAM = b"application/offset+octet-stream"

#: Where tus lives, under the mount prefix.
ROOT = b"/.tus"

#: Digits of an offset or length: more than 2**63 is refused before int().
MAX_DIGITS = 19
#: Bytes of an C{Upload-Metadata} or C{Upload-Concat} value.
MAX_HEADER = 16 * 1024
#: Pairs in C{Upload-Metadata}; partial uploads in one C{Upload-Concat}.
MAX_PAIRS = 64
MAX_PARTS = 256

_DIGITS = re.compile(rb"[0-9]{1,%d}" % MAX_DIGITS)
_KEY = re.compile(rb"[!-+\--~]+")  # printable ASCII, no space, no comma
_B64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_OWS = b" \t"
_ID = rb"[0-9a-f]{32}"
_ABSOLUTE = re.compile(rb"https?://[^/?#\s]+(/[^?#\s]*)")


def headerValue(headers: Any, name: bytes) -> bytes | None:
    """
    The one value of header C{name} (twisted's C{Headers}), L{None} when
    absent.

    @raise BadRequest: the header is sent more than once.
    """
    values = headers.getRawHeaders(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("duplicate-header", f"{name.decode()} is sent more than once")
    return values[0]  # type: ignore[no-any-return]


def checkResumable(value: bytes | None) -> None:
    """
    Every tus request but C{OPTIONS} names the version it speaks.

    @raise PreconditionFailed: it is not C{1.0.0} (the answer names the
        version served in C{Tus-Version}).
    """
    if value != VERSION:
        raise PreconditionFailed(
            "tus-version", "this server speaks tus 1.0.0 (Tus-Resumable: 1.0.0)",
            {b"Tus-Version": VERSION},
        )


def parseNumber(value: bytes, name: str) -> int:
    """
    A non-negative decimal of at most L{MAX_DIGITS} digits, nothing else.

    @raise BadRequest: C{bad-<name>}.
    """
    if _DIGITS.fullmatch(value) is None:
        raise BadRequest(
            f"bad-{name.lower()}", f"{name} must be a decimal number of at most {MAX_DIGITS} digits"
        )
    return int(value)


def parseOptionalNumber(value: bytes | None, name: str) -> int | None:
    return None if value is None else parseNumber(value, name)


def parseDeferLength(value: bytes | None) -> bool:
    """
    C{Upload-Defer-Length}: absent, or C{1}.
    """
    if value is None:
        return False
    if value != b"1":
        raise BadRequest("bad-upload-defer-length", "Upload-Defer-Length must be 1")
    return True


@attrs.frozen
class Metadata:
    """
    C{Upload-Metadata}: keys to decoded values (L{None}: a key alone), in
    the order sent, and the value as sent (echoed by C{HEAD}).
    """

    pairs: tuple[tuple[str, bytes | None], ...] = ()
    raw: bytes = b""

    def get(self, key: str) -> bytes | None:
        for name, value in self.pairs:
            if name == key:
                return value
        return None


def parseMetadata(value: bytes | None) -> Metadata:
    """
    C{Upload-Metadata}: comma-separated C{key base64value} pairs (a key
    alone is allowed); keys are printable ASCII without spaces or commas,
    and unique; values are strict base64. An empty value means none.

    @raise BadRequest: C{bad-metadata}, with what is wrong.
    """
    if value is None or value.strip(_OWS) == b"":
        return Metadata()
    if len(value) > MAX_HEADER:
        raise _badMetadata(f"longer than {MAX_HEADER} bytes")
    items = value.split(b",")
    if len(items) > MAX_PAIRS:
        raise _badMetadata(f"more than {MAX_PAIRS} pairs")
    pairs: list[tuple[str, bytes | None]] = []
    for item in items:
        key, space, encoded = item.lstrip(_OWS).partition(b" ")
        encoded = encoded.strip(_OWS)
        if _KEY.fullmatch(key) is None:
            raise _badMetadata("a key is empty or not printable ASCII")
        if space and _B64.fullmatch(encoded) is None:
            raise _badMetadata(f"the value of {key.decode('ascii')} is not base64")
        name = key.decode("ascii")
        if any(name == seen for seen, _ in pairs):
            raise _badMetadata(f"the key {name} is sent twice")
        decoded = base64.b64decode(encoded, validate=True) if space else None
        pairs.append((name, decoded))
    return Metadata(tuple(pairs), value)


def _badMetadata(why: str) -> BadRequest:
    return BadRequest("bad-metadata", f"Upload-Metadata: {why}")


def metadataDestination(metadata: Metadata, prefix: bytes = b"") -> UploadPath | None:
    """
    The destination a client names: C{relativePath} (what Uppy sends for a
    file of a dropped folder, as C{/folder/name}: the one leading slash is
    the drop's root; C{null} for any other file) wins over C{filename};
    L{None} when neither is sent. Both obey section 1's rules.

    @raise BadRequest: not UTF-8, or a path section 1 refuses.
    """
    for key in ("relativePath", "filename"):
        value = metadata.get(key)
        if value is None or (key == "relativePath" and value == b"null"):
            # Uppy sends relativePath "null" (String(null)) for a file that
            # is not in a dropped folder.
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("bad-metadata", f"Upload-Metadata: {key} is not UTF-8") from None
        if key == "relativePath" and text.startswith("/"):
            # A dropped folder's entries are rooted at the drop
            # ("/photos/a.jpg", FileSystemEntry.fullPath): one slash off.
            text = text[1:]
        try:
            return parseRelativePath(text, prefix)
        except BadRequest as e:
            raise BadRequest(e.code, f"Upload-Metadata {key}: {e.reason}") from None
    return None


@attrs.frozen
class Partial:
    """
    C{Upload-Concat: partial}: a part of a later concatenation, landing
    nowhere on its own.
    """


@attrs.frozen
class Final:
    """
    C{Upload-Concat: final;<url> ...}: the ids of the parts, in order.
    """

    parts: tuple[str, ...]


Concat = Union[Partial, Final]


def parseConcat(value: bytes | None, prefix: bytes = b"") -> Concat | None:
    """
    C{Upload-Concat}: C{partial}, or C{final;} and the space-separated URLs
    of partial uploads of this server: C{<prefix>/.tus/<id>}, or an
    absolute C{http(s)} URL with that path (any host: behind a proxy the
    client's host is not ours to know).

    @raise BadRequest: C{bad-concat}, for anything else (another path, a
        query, a repeated part, an empty list).
    """
    if value is None:
        return None
    if value == b"partial":
        return Partial()
    if len(value) > MAX_HEADER:
        raise _badConcat(f"longer than {MAX_HEADER} bytes")
    kind, semicolon, rest = value.partition(b";")
    if kind != b"final" or not semicolon:
        raise _badConcat("must be partial or final;<urls>")
    urls = rest.strip(_OWS).split()
    if not urls:
        raise _badConcat("final; names no partial upload")
    if len(urls) > MAX_PARTS:
        raise _badConcat(f"more than {MAX_PARTS} partial uploads")
    own = re.compile(re.escape(prefix.rstrip(b"/") + ROOT) + b"/(" + _ID + b")")
    parts: list[str] = []
    for url in urls:
        absolute = _ABSOLUTE.fullmatch(url)
        path = absolute.group(1) if absolute is not None else url
        found = own.fullmatch(path)
        if found is None:
            raise _badConcat("a partial upload is not an upload of this server")
        part = found.group(1).decode("ascii")
        if part in parts:
            raise _badConcat("a partial upload is named twice")
        parts.append(part)
    return Final(tuple(parts))


def _badConcat(why: str) -> BadRequest:
    return BadRequest("bad-concat", f"Upload-Concat: {why}")


@attrs.frozen
class Checksum:
    """
    C{Upload-Checksum}: the digest of this request's body.
    """

    alg: str
    digest: bytes


def parseChecksum(value: bytes | None) -> Checksum | None:
    """
    C{Upload-Checksum: <alg> <base64>} with an algorithm of L{CHECKSUMS}.

    @raise BadRequest: C{bad-checksum} (an unknown algorithm, bad base64, a
        digest of the wrong length).
    """
    if value is None:
        return None
    alg, space, encoded = value.partition(b" ")
    name = alg.decode("ascii", "replace")
    if name not in CHECKSUMS:
        raise BadRequest(
            "bad-checksum",
            "Upload-Checksum: the algorithm must be one of " + ", ".join(CHECKSUMS),
        )
    if not space or _B64.fullmatch(encoded) is None or not encoded:
        raise BadRequest("bad-checksum", "Upload-Checksum: the digest is not base64")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error:  # pragma: no cover - the pattern is stricter
        raise BadRequest("bad-checksum", "Upload-Checksum: the digest is not base64") from None
    if len(digest) != CHECKSUMS[name][1]:
        raise BadRequest(
            "bad-checksum", f"Upload-Checksum: a {name} digest has {CHECKSUMS[name][1]} bytes"
        )
    return Checksum(name, digest)


def newChecksumHasher(alg: str) -> Any:
    """
    A hash object for an algorithm of L{CHECKSUMS}.
    """
    return CHECKSUMS[alg][0]()


def parseTarget(rest: bytes) -> str | None:
    """
    What a path under C{/.tus} names: L{None} for the collection
    (C{/.tus/}, where uploads are created), or an upload id's text.

    @raise NotFound: C{no-upload}, for any other path.
    """
    if rest in (b"", b"/"):
        return None
    found = re.fullmatch(b"/(" + _ID + b")", rest)
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


def decideCreation(headers: Any, prefix: bytes, maxUploadSize: int) -> Creation:
    """
    Decide a creation (C{POST /.tus/}) from its headers, refusing in this
    order: C{412} (version), C{400} (lengths, metadata, concatenation,
    destination), C{413} (size).
    """
    checkResumable(headerValue(headers, b"Tus-Resumable"))
    total = parseOptionalNumber(headerValue(headers, b"Upload-Length"), "Upload-Length")
    deferred = parseDeferLength(headerValue(headers, b"Upload-Defer-Length"))
    metadata = parseMetadata(headerValue(headers, b"Upload-Metadata"))
    concat = parseConcat(headerValue(headers, b"Upload-Concat"), prefix)
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


def checkContentType(value: bytes | None) -> None:
    """
    A tus body (a PATCH's, a creation's) is C{application/offset+octet-stream}.

    @raise UnsupportedMediaType: C{415} for any other type, or none.
    """
    if value is None or value.split(b";")[0].strip(_OWS).lower() != OFFSET_STREAM:
        raise UnsupportedMediaType(
            "content-type", "a tus body carries Content-Type: application/offset+octet-stream"
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

