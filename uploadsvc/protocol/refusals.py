"""
Which refusal a request gets when several apply: docs/protocol.md section 6's
order as one table, read top-down (as h11's C{_state.py} keeps its
transitions).

Pure: L{firstRefusal} is a function of L{Facts}, what is known of a request so
far. The app learns facts in stages (the headers, then the disk, then the
decision under the upload's lock) and asks at each stage; a fact not known yet
is L{UNKNOWN}, and no row below an unknown one is looked at, so a later stage
can never be overtaken by a refusal that ranks after one it has yet to check.
"""

from __future__ import annotations

import enum
from typing import Callable, Union

import attrs

from uploadsvc.errors import Busy, InsufficientStorage, MethodNotAllowed, TooLarge, UploadError
from uploadsvc.protocol.decisions import AlreadyComplete, Plan


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


#: A fact not established yet.
UNKNOWN = _Unknown.UNKNOWN

#: The methods the upload interface answers.
METHODS = (b"PUT", b"POST", b"HEAD", b"DELETE")

#: The methods it answers with downloads on (C{--allow-download}).
METHODS_WITH_DOWNLOADS = (b"GET",) + METHODS

#: A check's answer to one refusal: L{None} (it does not apply), the
#: refusal, or L{UNKNOWN}.
Verdict = Union[UploadError, None, _Unknown]


@attrs.frozen
class Facts:
    """
    What is known of one request.

    @ivar credentials: the credentials check's refusal (401), or L{None}.
    @ivar path: the path rules' refusal (400, 404), or L{None}.
    @ivar method: the request's method.
    @ivar methods: the methods the server answers (405 for others).
    @ivar scope: the scoped credential's refusal (403 C{out-of-scope}), or
        L{None}. Unlike the other facts it defaults to L{None}: it is
        decided with the credentials, at dispatch (and by each front end,
        with L{uploadsvc.protocol.scopes.checkScope}), before any later
        stage builds its facts.
    @ivar declaredEnd: the largest size the headers claim (L{None}: none).
    @ivar declaredStart: the offset where the request's body begins: the
        bytes below it are staged already and need no more space.
    @ivar link: a symbolic link found on the way on disk (403), or L{None}.
    @ivar freeBytes: the disk's free space.
    @ivar busy: as many uploads as allowed are being written now.
    @ivar query: a status query (C{bytes */T}): never refused for size,
        space or busy.
    @ivar rangeError: a malformed C{Content-Range} or length (400).
    @ivar fieldError: a malformed digest field (400).
    @ivar state: the decision against what is stored: a L{Plan}, an
        L{AlreadyComplete} (a retried final request, never refused as
        busy), the refusal (409), or L{None} (nothing to decide).
    """

    credentials: UploadError | None | _Unknown = UNKNOWN
    path: UploadError | None | _Unknown = UNKNOWN
    method: bytes | _Unknown = UNKNOWN
    methods: tuple[bytes, ...] = METHODS
    scope: UploadError | None | _Unknown = None
    declaredEnd: int | None | _Unknown = UNKNOWN
    declaredStart: int = 0
    maxUploadSize: int = 0
    link: UploadError | None | _Unknown = UNKNOWN
    freeBytes: int | _Unknown = UNKNOWN
    minFreeBytes: int = 0
    busy: bool | _Unknown = UNKNOWN
    query: bool = False
    rangeError: UploadError | None | _Unknown = UNKNOWN
    fieldError: UploadError | None | _Unknown = UNKNOWN
    state: Plan | AlreadyComplete | UploadError | None | _Unknown = UNKNOWN


def _method(facts: Facts) -> Verdict:
    if facts.method is UNKNOWN:
        return UNKNOWN
    if facts.method in facts.methods:
        return None
    names = [m.decode("ascii") for m in facts.methods]
    return MethodNotAllowed(
        "method", f"use {', '.join(names[:-1])} or {names[-1]}",
        {b"Allow": b", ".join(facts.methods)},
    )


def _size(facts: Facts) -> Verdict:
    end = facts.declaredEnd
    if end is UNKNOWN:
        return UNKNOWN
    if end is not None and end > facts.maxUploadSize:
        return TooLarge("too-large", f"uploads are limited to {facts.maxUploadSize} bytes")
    return None


def _space(facts: Facts) -> Verdict:
    if facts.query:
        return None
    if facts.freeBytes is UNKNOWN or facts.declaredEnd is UNKNOWN:
        return UNKNOWN
    # A body of unknown length must at least find the floor free; a resumed
    # upload needs room only for what is not staged yet.
    needed = max(0, (facts.declaredEnd or 0) - facts.declaredStart)
    if facts.freeBytes - needed < facts.minFreeBytes:
        return InsufficientStorage("no-space", "not enough free disk space")
    return None


def _busy(facts: Facts) -> Verdict:
    if facts.busy is UNKNOWN:
        return UNKNOWN
    if not facts.busy or (facts.query and facts.rangeError is None):
        return None
    if isinstance(facts.state, AlreadyComplete):
        return None  # a retried final request writes nothing
    if facts.state is UNKNOWN and facts.rangeError is None and facts.fieldError is None:
        # Whether it is a retried final request is decided under the lock;
        # one with malformed headers cannot be.
        return UNKNOWN
    return busyRefusal()


def _headers(facts: Facts) -> Verdict:
    for error in (facts.rangeError, facts.fieldError):
        if error is not None:
            return error  # UNKNOWN too
    return None


def _state(facts: Facts) -> Verdict:
    return facts.state if isinstance(facts.state, UploadError) or facts.state is UNKNOWN else None


#: The refusals in the order in which they win (docs/protocol.md section 6).
REFUSALS: tuple[tuple[str, Callable[[Facts], Verdict]], ...] = (
    ("credentials", lambda facts: facts.credentials),  # 401
    ("path", lambda facts: facts.path),  # 400 path rules, 404 outside the prefix
    ("method", _method),  # 405
    ("scope", lambda facts: facts.scope),  # 403 outside the credential's folder or operations
    ("size", _size),  # 413
    ("link", lambda facts: facts.link),  # 403 a symbolic link on the way
    ("space", _space),  # 507
    ("busy", _busy),  # 503
    ("headers", _headers),  # 400 Content-Range, lengths, digest fields
    ("state", _state),  # 409 offset, total, existing file, parent or folder
)


def firstRefusal(facts: Facts) -> UploadError | None:
    """
    The refusal that wins among those the known facts give, or L{None}
    when none applies as far as they go (rows below the first unknown fact
    are not looked at: ask again once it is known).
    """
    for _, check in REFUSALS:
        verdict = check(facts)
        if verdict is UNKNOWN:
            return None
        if verdict is not None:
            return verdict
    return None


def busyRefusal() -> Busy:
    return Busy("busy", "too many uploads in progress")
