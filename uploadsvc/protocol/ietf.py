"""
The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload),
docs/protocol.md section 9: its header fields, its interop versions and the
decisions the front end (L{uploadsvc.web.ietf}) takes from a request's
headers. Pure: bytes and small frozen values in, values or an
L{UploadError} out.

What differs between the interop versions implemented (read from the
drafts' texts and change logs, and from the implementations of tusd,
tus-js-client's C{ietf-draft-05} mode and Apple's):

  - interop 3 (draft -01) had C{Upload-Incomplete}; from interop 4 (-02)
    it is C{Upload-Complete} (sf-boolean, inverted). Not implemented: no
    client in use sends 3-5.
  - interop 6 (drafts -04, -05; tus-js-client C{ietf-draft-05}, URLSession
    on iOS 18.1+/macOS 15.1+, tusd): PATCH needs C{Content-Type:
    application/partial-upload} (from -04); problem types
    C{mismatching-upload-offset} and C{completed-upload} (-04);
    C{Upload-Limit} with the lifetime as C{expires} (seconds left);
    C{Upload-Length} (-05); every 2xx answer to an append carries
    C{Upload-Offset} (and C{Upload-Limit}). URLSession leaves
    C{Upload-Complete} out of a PATCH that ends the upload, so for 6 a
    PATCH without it completes (as Apple's server reads it).
  - interop 7 (drafts -06 to -08): C{expires} renamed C{max-age}; append
    answers need C{Upload-Complete}, not C{Upload-Offset}; problem type
    C{inconsistent-upload-length}; a PATCH must carry C{Upload-Complete}.
  - interop 8 (drafts -09 to -11): C{Upload-Limit} required where limits
    apply (104, 201, HEAD); C{Accept-Patch: application/partial-upload}
    on C{OPTIONS} (-10); DELETE need not be 204 (we answer 204).
  - interop 9 (draft -12) and 10 (draft -13, the newest whose interop
    number could be checked here; Apple's server speaks 6 and 10): no
    change on the wire that a server answers differently; a final answer
    that ends the upload carries C{Upload-Complete: ?1} and its own
    C{Location} (the file's).

Drafts -14 and -15 exist; their interop number could not be read from
the material at hand, so they are not claimed (a new row in L{KNOWN}).

Every 2xx answer to a write carries C{Upload-Offset} and C{Upload-Limit}
(required for 6, allowed later), so that needs no row of its own. The
resource of a completed upload is gone at once (404), so the
C{completed-upload} problem type never applies here. For every version: the interim C{104 Upload Resumption Supported} with
C{Location} and C{Upload-Limit}; C{Upload-Offset}, C{Upload-Length},
C{Upload-Draft-Interop-Version} are sf-integers and C{Upload-Complete} an
sf-boolean, and a value of another shape is ignored (the draft: "Other
values MUST cause the entire header field to be ignored").
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Iterable, Mapping

import attrs

from uploadsvc.errors import BadRequest, Conflict, NotFound, UploadError
from uploadsvc.protocol import tusheaders
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.paths import UploadPath

#: The media type of a PATCH that appends.
PARTIAL_UPLOAD = b"application/partial-upload"

#: Where the problem types of the draft live (RFC 9457 registry).
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"


@attrs.frozen
class Version:
    """
    One interop version of the draft and what a server does differently
    for it.

    @ivar number: the C{Upload-Draft-Interop-Version}.
    @ivar drafts: which drafts use it (for messages and docs).
    @ivar lifetimeKey: the C{Upload-Limit} key of the time left.
    @ivar patchCompletesByDefault: a PATCH without C{Upload-Complete}
        ends the upload (else it is refused).
    @ivar lengthProblem: C{inconsistent-upload-length} is a defined
        problem type (else a plain 400).
    """

    number: int
    drafts: str
    lifetimeKey: str
    patchCompletesByDefault: bool
    lengthProblem: bool


#: Every version implemented, by number.
KNOWN: Mapping[int, Version] = {
    v.number: v
    for v in (
        Version(6, "-04, -05", "expires", True, False),
        Version(7, "-06 to -08", "max-age", False, True),
        Version(8, "-09 to -11", "max-age", False, True),
        Version(9, "-12", "max-age", False, True),
        Version(10, "-13", "max-age", False, True),
    )
}

#: The versions served unless configured otherwise (docs/protocol.md
#: section 9: 6, 8 and the newest).
DEFAULT_VERSIONS = (6, 8, 10)


def parseVersionList(text: str) -> tuple[int, ...]:
    """
    The C{--ietf-versions} option: comma-separated interop versions, each
    one of L{KNOWN}; sorted, without repeats.

    @raise ValueError: with one line saying what is wrong.
    """
    numbers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"[0-9]{1,3}", part) or int(part) not in KNOWN:
            raise ValueError(
                f"unknown interop version {part!r} (known: {', '.join(map(str, KNOWN))})"
            )
        numbers.add(int(part))
    return tuple(sorted(numbers))


# --- structured fields (RFC 9651), the few shapes the draft uses ----------

_KEY = r"[a-z*][a-z0-9_.*-]*"
_BARE = r'-?[0-9]{1,12}\.[0-9]{1,3}|-?[0-9]{1,15}|\?[01]|[A-Za-z*][A-Za-z0-9:/!#$%&\'*+.^_`|~-]*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"'
_PARAMS = rf"(?:;[ ]*{_KEY}(?:=(?:{_BARE}))?)*"
_ITEM = re.compile(rf"(?P<bare>{_BARE})(?P<params>{_PARAMS})")
_INTEGER = re.compile(r"-?[0-9]{1,15}")


def _item(values: Iterable[bytes] | None) -> str | None:
    """
    The bare item of an Item field (its parameters checked and dropped),
    or L{None} when absent or not an Item. Several field lines are one
    field joined by commas (RFC 9110 section 5.3), which no Item is.
    """
    if not values:
        return None
    joined = b", ".join(values)
    try:
        text = joined.decode("ascii")
    except UnicodeDecodeError:
        return None
    # RFC 9651 section 4.2: leading and trailing SP are discarded.
    match = _ITEM.fullmatch(text.strip(" "))
    return match.group("bare") if match is not None else None


def parseBoolean(values: Iterable[bytes] | None) -> bool | None:
    """
    An sf-boolean Item field (C{Upload-Complete}): L{None} when absent or
    of another shape (then ignored, as the draft says).
    """
    bare = _item(values)
    if bare == "?1":
        return True
    if bare == "?0":
        return False
    return None


def parseInteger(values: Iterable[bytes] | None, nonNegative: bool = True) -> int | None:
    """
    An sf-integer Item field (C{Upload-Offset}, C{Upload-Length},
    C{Upload-Draft-Interop-Version}): L{None} when absent, of another
    shape, or negative where it must not be.
    """
    bare = _item(values)
    if bare is None or _INTEGER.fullmatch(bare) is None:
        return None
    value = int(bare)
    if nonNegative and value < 0:
        return None
    return value


#: The largest structured-field integer (RFC 9651: 15 digits); a larger
#: --max-upload-size or lifetime is announced as this (about 888 TiB, or
#: 31 million years), which no client reaches.
SF_INTEGER_MAX = 999_999_999_999_999


def formatLimit(version: Version, maxSize: int, maxAge: int | None) -> bytes:
    """
    C{Upload-Limit} (an sf-dictionary) for C{version}: the largest upload,
    C{min-size=0}, and the time left before an idle upload expires (no
    key when expiry is off).
    """
    members = [f"max-size={min(maxSize, SF_INTEGER_MAX)}", "min-size=0"]
    if maxAge is not None:
        members.append(f"{version.lifetimeKey}={min(maxAge, SF_INTEGER_MAX)}")
    return ", ".join(members).encode("ascii")


# --- which requests are the draft's, and how they are read ---------------


@attrs.frozen
class DraftWrite:
    """
    A request that writes a draft upload: its creation (at offset 0) or a
    PATCH.

    @ivar version: the version it is served by.
    @ivar offset: C{Upload-Offset} (0 for a creation).
    @ivar complete: C{Upload-Complete}.
    @ivar length: the upload's length when the headers tell it.
    @ivar interim: whether a C{104} is sent (a creation that named its
        version).
    """

    version: Version
    offset: int
    complete: bool
    length: int | None
    interim: bool = False


def unsupported(number: int | None, supported: Iterable[int]) -> BadRequest:
    """
    The refusal of a draft request naming a version not served.
    """
    names = ", ".join(str(n) for n in sorted(supported))
    what = "malformed" if number is None else f"unsupported ({number})"
    return BadRequest(
        "ietf-version",
        f"Upload-Draft-Interop-Version is {what}; this server speaks {names}",
    )


def _version(
    headers: Mapping[bytes, list[bytes]], supported: Iterable[int]
) -> tuple[Version | None, bool, int | None]:
    """
    The version a request names: C{(version, named, number)}; C{version}
    is L{None} when it names one not served (or a malformed one).
    """
    raw = headers.get(b"upload-draft-interop-version")
    served = sorted(supported)
    if not raw:
        return KNOWN[served[-1]], False, None
    number = parseInteger(raw)
    if number is None or number not in served:
        return None, True, number
    return KNOWN[number], True, number


def readCreation(
    headers: Mapping[bytes, list[bytes]],
    contentLength: int | None,
    supported: Iterable[int],
) -> DraftWrite | None:
    """
    Decide whether a POST or PUT creates a draft upload (docs/protocol.md
    section 9): L{None} for a plain upload (no C{Upload-Complete}, or an
    unknown version with C{?1}, which is then served as section 2).

    @param headers: lowercase field names to their lines.
    @raise BadRequest: an unknown version with C{?0}; an C{Upload-Offset}
        other than 0; lengths that disagree.
    """
    supported = tuple(supported)
    complete = parseBoolean(headers.get(b"upload-complete"))
    if complete is None:
        return None
    version, named, number = _version(headers, supported)
    if version is None:
        if complete:
            return None
        raise unsupported(number, supported)
    offset = parseInteger(headers.get(b"upload-offset"))
    if offset not in (None, 0):
        raise BadRequest("ietf-offset", "a creation request starts at Upload-Offset 0")
    length = _length(version, headers, complete, 0, contentLength)
    return DraftWrite(version, 0, complete, length, interim=named)


def readVersion(
    headers: Mapping[bytes, list[bytes]], supported: Iterable[int]
) -> Version:
    """
    The version of a request to an upload resource (HEAD, PATCH, DELETE,
    OPTIONS): the one it names, or the newest served when it names none.

    @raise BadRequest: it names one not served.
    """
    supported = tuple(supported)
    version, _, number = _version(headers, supported)
    if version is None:
        raise unsupported(number, supported)
    return version


def readAppend(
    version: Version, headers: Mapping[bytes, list[bytes]], contentLength: int | None
) -> DraftWrite:
    """
    Read a PATCH's headers.

    @raise UploadError: C{415} without C{application/partial-upload};
        C{400} without a valid C{Upload-Offset} or C{Upload-Complete}.
    """
    mediaType = b",".join(headers.get(b"content-type", [])).split(b";")[0].strip(b" \t").lower()
    if mediaType != PARTIAL_UPLOAD:
        raise UnsupportedMediaType(
            "ietf-content-type", "an append needs Content-Type: application/partial-upload",
            {b"Accept-Patch": PARTIAL_UPLOAD},
        )
    offset = parseInteger(headers.get(b"upload-offset"))
    if offset is None:
        raise BadRequest("ietf-offset", "an append needs Upload-Offset (a non-negative integer)")
    complete = parseBoolean(headers.get(b"upload-complete"))
    if complete is None:
        if not version.patchCompletesByDefault:
            raise BadRequest("ietf-complete", "an append needs Upload-Complete (?0 or ?1)")
        complete = True
    return DraftWrite(version, offset, complete, _length(version, headers, complete, offset, contentLength))


def _length(
    version: Version,
    headers: Mapping[bytes, list[bytes]],
    complete: bool,
    offset: int,
    contentLength: int | None,
) -> int | None:
    """
    The upload's length as the headers tell it: C{Upload-Length}, or the
    offset plus C{Content-Length} of a request that completes the upload;
    both must agree.
    """
    told = parseInteger(headers.get(b"upload-length"))
    implied = offset + contentLength if complete and contentLength is not None else None
    if told is not None and implied is not None and told != implied:
        raise inconsistentLength(version, f"Upload-Length {told} differs from the {implied} bytes this request ends the upload at")
    return told if told is not None else implied


# --- problem documents (RFC 9457) -----------------------------------------


class UnsupportedMediaType(UploadError):
    status = 415


class Problem:
    """
    Mixed into an L{UploadError} whose answer is an RFC 9457 problem
    document (C{application/problem+json}) instead of a line of text.

    @ivar problem: the document's members.
    """

    problem: dict[str, object]


class ProblemConflict(Conflict, Problem):
    def __init__(self, code: str, reason: str, headers: Mapping[bytes, bytes], problem: dict[str, object]) -> None:
        super().__init__(code, reason, headers)
        self.problem = problem


class ProblemBadRequest(BadRequest, Problem):
    def __init__(self, code: str, reason: str, headers: Mapping[bytes, bytes], problem: dict[str, object]) -> None:
        super().__init__(code, reason, headers)
        self.problem = problem


def problemBody(error: UploadError) -> bytes | None:
    """
    The problem document of C{error} as JSON bytes, or L{None} when it is
    answered as text.
    """
    problem = getattr(error, "problem", None)
    if problem is None:
        return None
    body = {"title": error.reason, "status": error.status, **problem}
    return json.dumps(body, sort_keys=True).encode("utf-8")


def mismatchingOffset(expected: int, provided: int) -> ProblemConflict:
    """
    C{409}: the append starts elsewhere than the upload's offset.
    """
    return ProblemConflict(
        "offset-mismatch",
        f"upload offset is {expected}, not {provided}",
        {b"Upload-Offset": b"%d" % expected, b"Upload-Complete": b"?0"},
        {
            "type": PROBLEM_BASE + "mismatching-upload-offset",
            "expected-offset": expected,
            "provided-offset": provided,
        },
    )


def inconsistentLength(version: Version, reason: str) -> BadRequest:
    """
    C{400}: lengths that disagree, or data past the known length.
    """
    if not version.lengthProblem:
        return BadRequest("length-mismatch", reason)
    return ProblemBadRequest(
        "length-mismatch", reason, {},
        {"type": PROBLEM_BASE + "inconsistent-upload-length"},
    )


# --- the decision of an append ----------------------------------------------


def planWrite(stored: Stored, write: DraftWrite, contentLength: int | None) -> Plan:
    """
    Decide a creation's body (against the upload it just made) or a PATCH
    against what is stored, from the headers alone.

    @raise NotFound: the upload is gone (completed, cancelled, expired).
    @raise ProblemConflict: C{Upload-Offset} is not the stored offset.
    @raise BadRequest: a length that differs from the recorded one, or
        data past the known length.
    """
    if not stored.incomplete:
        raise NotFound("no-upload", "there is no such upload")
    if write.offset != stored.offset:
        raise mismatchingOffset(stored.offset, write.offset)
    version, offset, length = write.version, write.offset, write.length
    total = stored.total
    if length is not None:
        if total is not None and total != length:
            raise inconsistentLength(version, f"upload length is {total}, not {length}")
        if length < offset:
            raise inconsistentLength(version, f"upload length {length} is below the offset {offset}")
        total = length
    take = contentLength
    if total is not None:
        room = total - offset
        if contentLength is not None and contentLength > room:
            raise inconsistentLength(
                version, f"the body runs {contentLength - room} bytes past the upload length {total}"
            )
        if take is None:
            take = room  # a chunked body may not run past it either
    return Plan(False, offset, 0, take, total)


# --- Upload-Metadata: tus-js-client's ietf-draft-05 names the file so -----


def metadataDestination(values: Iterable[bytes] | None, prefix: bytes = b"") -> UploadPath | None:
    """
    The destination tus-style C{Upload-Metadata} names (C{relativePath},
    then C{filename}: what tus-js-client's C{ietf-draft-05} mode and Uppy
    send instead of C{Content-Disposition}), or L{None} when it names none.

    @raise BadRequest: malformed metadata, or a path section 1 refuses.
    """
    if not values:
        return None
    return tusheaders.metadataDestination(tusheaders.parseMetadata(b",".join(values)), prefix)


# --- Content-Disposition (RFC 6266): the file name of a creation ----------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"'
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_EXT = re.compile(r"(?i:utf-8)'[A-Za-z0-9-]*'((?:[!#$&+.^_`|~0-9A-Za-z-]|%[0-9A-Fa-f]{2})*)")


def dispositionFilename(values: Iterable[bytes] | None) -> str | None:
    """
    The file name a creation's C{Content-Disposition} gives (C{filename*}
    in UTF-8 wins over C{filename}), or L{None} when it gives none.

    @raise BadRequest: a field that is not a disposition type with
        parameters, or a file name that is not UTF-8.
    """
    if not values:
        return None
    try:
        text = b", ".join(values).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("bad-disposition", "Content-Disposition is not UTF-8") from None
    head = re.match(rf"\s*{_TOKEN}", text)
    if head is None:
        raise BadRequest("bad-disposition", "Content-Disposition is malformed")
    params: dict[str, str] = {}
    at = head.end()
    while at < len(text):
        match = _PARAM.match(text, at)
        if match is None or match.end() == at:
            raise BadRequest("bad-disposition", "Content-Disposition is malformed")
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(match.group(1).lower(), value)
        at = match.end()
    extended = params.get("filename*")
    if extended is not None:
        ext = _EXT.fullmatch(extended)
        if ext is None:
            raise BadRequest("bad-disposition", "Content-Disposition filename* is not UTF-8''...")
        try:
            return urllib.parse.unquote(ext.group(1), errors="strict")
        except UnicodeDecodeError:
            raise BadRequest("bad-disposition", "Content-Disposition filename* is not UTF-8") from None
    return params.get("filename")
