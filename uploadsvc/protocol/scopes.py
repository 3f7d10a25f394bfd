"""
Scoped credentials: what one bearer token may do, and where.

A line of the C{--auth-tokens} file is a token, optionally followed by
fields that limit it (docs/operating.md)::

    s3cr3t-token-of-alice-0001 name=alice prefix=alice/ ops=upload,download

A plain line (the token alone) may do everything, anywhere. Pure: lines in,
L{Credential}s out; a credential, a checked L{UploadPath} and an operation
in, a verdict out. Every front end (the path-addressed app, tus, the IETF
draft) asks L{checkScope} with the operation its request performs.
"""

from __future__ import annotations

import re
from typing import Iterable

import attrs

from uploadsvc.errors import BadRequest, Forbidden
from uploadsvc.protocol.paths import UploadPath, parseRelativePath

#: Where an upload created without a name lands (C{incoming/<id>}).
INCOMING = "incoming"

UPLOAD = "upload"
DOWNLOAD = "download"
DELETE = "delete"

#: Every operation, in the order the docs list them.
OPERATIONS: tuple[str, ...] = (UPLOAD, DOWNLOAD, DELETE)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_FIELDS = ("name", "prefix", "ops")


class ScopeSyntaxError(ValueError):
    """
    A token line that cannot be read; the message says what is wrong, in
    one line, without the token.
    """


@attrs.frozen
class Credential:
    """
    One token and what it may do.

    @ivar token: the secret (never logged: not in C{repr}).
    @ivar name: who it is, for logs and hooks; L{None} on a plain line.
    @ivar prefix: the folder it is limited to, as path components; C{()}
        is the whole root.
    @ivar operations: what it may do (a subset of L{OPERATIONS}).
    """

    token: bytes = attrs.field(repr=False)
    name: str | None = None
    prefix: tuple[str, ...] = ()
    operations: frozenset[str] = frozenset(OPERATIONS)

    def allows(self, operation: str) -> bool:
        return operation in self.operations

    def covers(self, path: UploadPath) -> bool:
        """
        Whether C{path} lies inside L{prefix}: compared component by
        component, so C{alice/} never covers C{alice2/x}.
        """
        n = len(self.prefix)
        return len(path.components) > n and path.components[:n] == self.prefix


def parseTokenLine(line: bytes) -> Credential | None:
    """
    One line of a token file: L{None} for a blank line or a C{#} comment.

    @raise ScopeSyntaxError: a field that is unknown, repeated, malformed,
        an unknown operation, or a prefix that breaks the path rules.
    """
    words = line.split()
    if not words or words[0].startswith(b"#"):
        return None
    token, fields = words[0], words[1:]
    seen: dict[str, str] = {}
    for raw in fields:
        try:
            field = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ScopeSyntaxError("a field is not UTF-8 text") from None
        key, equals, value = field.partition("=")
        if not equals:
            raise ScopeSyntaxError(f"{field!r} is not key=value (keys: name, prefix, ops)")
        if key not in _FIELDS:
            raise ScopeSyntaxError(f"unknown field {key!r} (use name, prefix, ops)")
        if key in seen:
            raise ScopeSyntaxError(f"{key}= given twice")
        seen[key] = value
    name = seen.get("name")
    if name is not None and _NAME.fullmatch(name) is None:
        raise ScopeSyntaxError(
            f"name {name!r}: use 1 to 64 letters, digits or ._@- (starting with a letter or digit)"
        )
    prefix = _parsePrefix(seen["prefix"]) if "prefix" in seen else ()
    operations = _parseOperations(seen["ops"]) if "ops" in seen else frozenset(OPERATIONS)
    return Credential(token, name, prefix, operations)


def _parsePrefix(value: str) -> tuple[str, ...]:
    """
    A prefix names a folder under the root, with the section 1 rules of a
    path (no percent-decoding): C{alice}, C{alice/} and C{/alice/} are the same.
    """
    folder = value
    if folder.startswith("/"):
        folder = folder[1:]
    if folder.endswith("/"):
        folder = folder[:-1]
    if not folder:
        raise ScopeSyntaxError("prefix= is empty (leave it out for the whole root)")
    try:
        return parseRelativePath(folder).components
    except BadRequest as e:
        raise ScopeSyntaxError(f"prefix {value!r}: {e.reason}") from None


def _parseOperations(value: str) -> frozenset[str]:
    names = value.split(",")
    for name in names:
        if name not in OPERATIONS:
            raise ScopeSyntaxError(
                f"unknown operation {name!r} in ops= (use {', '.join(OPERATIONS)})"
            )
    return frozenset(names)


def parseTokenLines(lines: Iterable[bytes]) -> list[tuple[int, Credential]]:
    """
    Every credential of a token file, with its line number.

    @raise ScopeSyntaxError: the first bad line (C{"line N: ..."}), or a name
        or token given on two lines.
    """
    found: list[tuple[int, Credential]] = []
    names: dict[str, int] = {}
    tokens: dict[bytes, int] = {}
    for number, line in enumerate(lines, 1):
        try:
            credential = parseTokenLine(line)
        except ScopeSyntaxError as e:
            raise ScopeSyntaxError(f"line {number}: {e}") from None
        if credential is None:
            continue
        if credential.name is not None:
            if credential.name in names:
                raise ScopeSyntaxError(
                    f"line {number}: name {credential.name!r} already used on line "
                    f"{names[credential.name]}"
                )
            names[credential.name] = number
        if credential.token in tokens:
            raise ScopeSyntaxError(
                f"line {number}: the same token as on line {tokens[credential.token]}"
            )
        tokens[credential.token] = number
        found.append((number, credential))
    return found


def outOfScope(reason: str) -> Forbidden:
    return Forbidden("out-of-scope", reason)


def checkScope(credential: Credential | None, path: UploadPath, operation: str) -> None:
    """
    Let a request that performs C{operation} on C{path} through, or refuse
    it. L{None} (no token: a signed URL, a trusted front end, no
    authentication) is not limited here.

    @param path: the parsed, checked path (never the raw URL).
    @raise Forbidden: C{out-of-scope}.
    """
    if credential is None:
        return
    if not credential.allows(operation):
        raise outOfScope(f"this credential may not {operation}")
    if not credential.covers(path):
        raise outOfScope("this path is outside this credential's folder")


def requestOperation(
    credential: Credential | None, method: bytes, downloads: bool
) -> str | None:
    """
    The operation a request of the path-addressed interface performs, as far
    as its method tells (L{None} for a method it does not answer).

      - C{PUT}, C{POST}: upload; C{GET}: download.
      - C{HEAD}: an upload's status query for a credential that may upload;
        else, with downloads on, a download without its body (an incomplete
        upload then answers 404, as C{GET} would).
      - C{DELETE}: delete for a credential that may delete; else an upload's
        cancel (a credential that may upload may start an upload over
        anyway), which may not remove a complete file.

    @raise Forbidden: C{out-of-scope} for a C{HEAD} or C{DELETE} that the
        credential may do in neither way.
    """
    if method in (b"PUT", b"POST"):
        return UPLOAD
    if method == b"GET":
        return DOWNLOAD
    if method == b"HEAD":
        if credential is None or credential.allows(UPLOAD):
            return UPLOAD
        if downloads and credential.allows(DOWNLOAD):
            return DOWNLOAD
        raise outOfScope("this credential may not upload or download")
    if method == b"DELETE":
        if credential is None or credential.allows(DELETE):
            return DELETE
        if credential.allows(UPLOAD):
            return UPLOAD
        raise outOfScope("this credential may not delete")
    return None


@attrs.frozen
class Access:
    """
    What let a request through: its token's credential, or a signed URL
    (which names one path and one method, nothing else), or neither (no
    authentication configured: everything is allowed).
    """

    credential: Credential | None = None
    signed: bool = False


def checkCreation(access: Access, destination: UploadPath | None, named: bool = False) -> None:
    """
    Let a tus or draft creation that lands at C{destination} through, or
    refuse it (C{upload} on the destination).

    @param destination: L{None}: C{incoming/<id>}, the id made with the
        upload. A credential limited to a folder may create one only if its
        folder is C{incoming/}: any other must name its file inside its
        folder (it is never moved there behind the client's back).
    @param named: the destination is the request's own path (a draft
        creation on a file path), which a signed URL names.
    @raise Forbidden: C{out-of-scope}; always for a signed URL of a creation
        at C{/.tus/} or C{/.uploads/}, whose signature names no destination.
    """
    if access.signed and not named:
        raise outOfScope("a signed URL names no destination for a tus or draft creation")
    credential = access.credential
    if destination is not None:
        checkScope(credential, destination, UPLOAD)
        return
    if credential is None:
        return
    if not credential.allows(UPLOAD):
        raise outOfScope(f"this credential may not {UPLOAD}")
    if credential.prefix not in ((), (INCOMING,)):
        raise outOfScope(
            "this credential must name its upload inside its folder "
            f"({'/'.join(credential.prefix)}/)"
        )


def idOperation(credential: Credential | None, method: bytes) -> str:
    """
    The operation of a request on a tus or draft upload id (C{method} as
    the front end means it): C{HEAD} (an offset query), C{PATCH} and
    C{POST} upload; C{DELETE} terminates an incomplete upload, which a
    credential that may upload may do as with a path C{DELETE}
    (L{requestOperation}).

    @raise Forbidden: C{out-of-scope}, a C{DELETE} the credential may do in
        neither way.
    """
    if method == b"DELETE":
        operation = requestOperation(credential, method, False)
        assert operation is not None
        return operation
    return UPLOAD


def checkUpload(
    access: Access, destination: UploadPath, method: bytes, overridden: bool = False
) -> None:
    """
    Let a later request on a tus or draft upload (an offset query, an
    append, a termination) whose destination is C{destination} through, or
    refuse it.

    @param method: the method the front end serves it as.
    @param overridden: the method is not the request's own (tus
        C{X-HTTP-Method-Override}): a signed URL signs only its own.
    @raise Forbidden: C{out-of-scope}.
    """
    if access.signed:
        # The signature names this very URL and method (checked before).
        if overridden:
            raise outOfScope("a signed URL authorizes only its own method (no X-HTTP-Method-Override)")
        return
    checkScope(access.credential, destination, idOperation(access.credential, method))
