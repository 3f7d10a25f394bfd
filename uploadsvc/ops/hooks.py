"""
Hooks, the pure part (docs/operating.md): their names, the JSON event
a hook is sent, how its answer is read, and when a notification is tried
again.

Nothing here touches a reactor, a socket or a process: the HTTP and
command glue (L{uploadsvc.ops.hookhttp}, L{uploadsvc.ops.hookcommand}) turn
what they get back into a L{Decision} or a L{HookFailed} with these
functions, and L{uploadsvc.ops.hookrunner} decides what the upload makes of
it.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Union

import attrs

from uploadsvc.errors import Busy, UploadError

PRE_CREATE = "pre-create"
PRE_FINISH = "pre-finish"
POST_CREATE = "post-create"
POST_FINISH = "post-finish"
POST_TERMINATE = "post-terminate"
POST_EXPIRE = "post-expire"

#: Hooks that the upload waits for: they may refuse it.
BLOCKING = (PRE_CREATE, PRE_FINISH)
#: Hooks told after the answer is decided; they never change it.
NOTIFICATIONS = (POST_CREATE, POST_FINISH, POST_TERMINATE, POST_EXPIRE)
ALL_HOOKS = BLOCKING + NOTIFICATIONS

#: The version of the event document; a change that breaks a reader raises it.
PAYLOAD_VERSION = 1

#: The largest answer read from a hook (an HTTP body, a command's stdout):
#: an answer is a small JSON object, and a hook must not fill our memory.
MAX_ANSWER_BYTES = 64 * 1024

#: The longest refusal reason passed on to a client.
MAX_REASON_CHARS = 200

#: Seconds a client is told to wait (C{Retry-After}) when a blocking hook failed.
RETRY_AFTER = 5

#: Request header fields never sent to a hook: credentials, and anything
#: whose name says it carries a secret.
_SECRET_FIELDS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = ("token", "secret", "password", "api-key", "apikey", "signature")

#: Statuses a hook may refuse with: a 4xx but 401 and 407, which need a
#: challenge header that only the server's own credentials check can give.
_REFUSAL_STATUSES = frozenset(range(400, 500)) - {401, 407}


class HookFailed(Exception):
    """
    A hook gave no usable answer (unreachable, a 5xx, garbage, too slow, a
    command that failed without a decision). A blocking hook's failure is a
    C{503} for the client, never a success.

    @ivar reason: one line for the operator's log (never sent to a client).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Proceed:
    """
    The hook lets the upload go on.

    @ivar path: for C{pre-create}, the destination the hook chose instead
        (relative to the root, C{/}-separated, not percent-encoded), or
        L{None} to keep the request's.
    """

    path: str | None = None


@attrs.frozen
class Refuse:
    """
    The hook refuses the upload: the client gets C{status} and C{reason}.
    """

    status: int
    reason: str


Decision = Union[Proceed, Refuse]


def parseHookList(text: str) -> frozenset[str]:
    """
    The hooks named in a comma-separated list (C{--hooks}); C{all} names
    every one.

    @raise ValueError: an unknown name, or none at all.
    """
    if text.strip() == "all":
        return frozenset(ALL_HOOKS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_HOOKS]
    if unknown:
        raise ValueError(f"unknown hook {unknown[0]!r}; known: {', '.join(ALL_HOOKS)}")
    if not names:
        raise ValueError(f"name at least one of {', '.join(ALL_HOOKS)}")
    return frozenset(names)


@attrs.frozen
class HookUpload:
    """
    What a hook is told about the upload.

    @ivar path: its destination, relative to the root (L{None}: not known).
    @ivar uploadId: its server-assigned id (tus, the draft), if any.
    @ivar key: the store's name for it.
    @ivar protocol: C{"put"}, C{"tus"} or C{"ietf"}; L{None} for jobs.
    @ivar offset: bytes staged.
    @ivar total: its length, when known.
    @ivar metadata: what the client said about it (tus C{Upload-Metadata});
        empty for path uploads.
    """

    path: str | None
    key: str
    uploadId: str | None = None
    protocol: str | None = None
    offset: int = 0
    total: int | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class HookRequest:
    """
    What a hook is told about the request that caused the event.

    @ivar path: the request's path without its query (which may carry a
        signature).
    @ivar headers: the header fields minus credentials (L{safeHeaders}),
        names lowercased.
    @ivar client: the client's address (C{host} or C{host:port}).
    """

    method: str
    path: str
    headers: Mapping[str, tuple[str, ...]]
    client: str | None


def safeHeaders(fields: Iterable[tuple[bytes, Iterable[bytes]]]) -> dict[str, tuple[str, ...]]:
    """
    Header fields fit to send to a hook: C{Authorization}, cookies and any
    field whose name says it carries a secret are left out.
    """
    out: dict[str, tuple[str, ...]] = {}
    for rawName, values in fields:
        name = rawName.decode("latin-1").lower()
        if name in _SECRET_FIELDS or any(word in name for word in _SECRET_WORDS):
            continue
        out[name] = out.get(name, ()) + tuple(v.decode("latin-1") for v in values)
    return out


def requestFacts(request: Any) -> HookRequest:
    """
    The L{HookRequest} of a twisted.web request.
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    client = None if host is None else (f"{host}:{port}" if port is not None else host)
    if client is None and getattr(address, "name", None) is not None:
        client = f"unix:{address.name!r}"
    return HookRequest(
        method=request.method.decode("latin-1"),
        path=request.uri.split(b"?", 1)[0].decode("latin-1"),
        headers=safeHeaders(request.requestHeaders.getAllRawHeaders()),
        client=client,
    )


def buildPayload(
    hook: str,
    upload: HookUpload,
    request: HookRequest | None = None,
    credential: str | None = None,
    requestId: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> bytes:
    """
    The JSON event document sent to a hook (an HTTP body, a command's stdin).

    @param request: the request that caused it (blocking hooks; L{None}
        for notifications, which follow lifecycle events).
    @param credential: the name of the client's credential; never a secret.
    @param requestId: the id of the request that caused it, when known.
    @param detail: more, per event (notifications: the lifecycle event's).
    """
    document: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "hook": hook,
        "upload": {
            "path": upload.path,
            "id": upload.uploadId,
            "key": upload.key,
            "protocol": upload.protocol,
            "offset": upload.offset,
            "total": upload.total,
            "metadata": dict(upload.metadata),
        },
        "request": None,
        "requestId": requestId,
        "credential": credential,
    }
    if request is not None:
        document["request"] = {
            "method": request.method,
            "path": request.path,
            "headers": {name: list(values) for name, values in request.headers.items()},
            "client": request.client,
        }
    if detail:
        document["detail"] = dict(detail)
    return json.dumps(document, sort_keys=True, default=str).encode("utf-8")


def oneLine(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """
    C{text} as one short printable line: control characters become
    spaces, runs of white space one space, and it is cut at C{limit}.
    """
    cleaned = "".join(
        " " if (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029") else c
        for c in text
    )
    cleaned = " ".join(cleaned.split())
    return cleaned[:limit]


def parseAnswer(hook: str, body: bytes) -> Decision:
    """
    Read a hook's answer document: empty (go on), or a JSON object with
    C{"status"} and C{"reason"} (refuse), or, for C{pre-create} only,
    C{"path"} (go on to another destination). Other members are ignored.

    @raise HookFailed: anything else.
    """
    if len(body) > MAX_ANSWER_BYTES:
        raise HookFailed(f"answer longer than {MAX_ANSWER_BYTES} bytes")
    if not body.strip():
        return Proceed()
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HookFailed("answer is not JSON") from None
    if not isinstance(document, dict):
        raise HookFailed("answer is not a JSON object")
    status = document.get("status")
    path = document.get("path")
    reason = document.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise HookFailed("answer's reason is not a string")
    if path is not None:
        if hook != PRE_CREATE:
            raise HookFailed(f"a {hook} hook cannot change the destination")
        if not isinstance(path, str):
            raise HookFailed("answer's path is not a string")
    if status is None or (type(status) is int and 200 <= status <= 299):
        return Proceed(path)
    if type(status) is not int or status not in _REFUSAL_STATUSES:
        raise HookFailed(f"answer's status {status!r} is neither 2xx nor a 4xx other than 401/407")
    if path is not None:
        raise HookFailed("answer both refuses and changes the destination")
    return Refuse(status, oneLine(reason or "") or f"refused by the {hook} hook")


def parseHTTPAnswer(hook: str, code: int, body: bytes) -> Decision:
    """
    Read an HTTP hook's answer: a 2xx carries an answer document
    (L{parseAnswer}); a 4xx (but 401, 404, 405, 407) refuses, its reason
    the document's C{"reason"} or the first line of a text body.

    @raise HookFailed: any other status (5xx, a redirect, a 404 or 405
        that says the URL is wrong), or a 2xx with a bad document.
    """
    if 200 <= code <= 299:
        return parseAnswer(hook, body)
    if code in (404, 405):
        # Far likelier a wrong --hook-url than a decision: every upload
        # would be refused with the endpoint's error page. (A hook that
        # means it answers 200 with the document.)
        raise HookFailed(f"answered HTTP {code}: is the hook URL right?")
    if code not in _REFUSAL_STATUSES:
        raise HookFailed(f"answered HTTP {code}")
    reason = ""
    try:
        document = json.loads(body.decode("utf-8"))
        if isinstance(document, dict) and isinstance(document.get("reason"), str):
            reason = document["reason"]
    except (UnicodeDecodeError, ValueError):
        lines = body.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0] if lines else ""
    return Refuse(code, oneLine(reason) or f"refused by the {hook} hook")


def parseCommandAnswer(hook: str, exitCode: int | None, stdout: bytes) -> Decision:
    """
    Read a command hook's answer: with exit status 0, its stdout is the
    answer document (empty: go on); with another status, only a refusal
    on stdout counts.

    @param exitCode: L{None} when it was ended by a signal.
    @raise HookFailed: a failure without a refusal, or a bad document.
    """
    if exitCode == 0:
        return parseAnswer(hook, stdout)
    how = "was killed by a signal" if exitCode is None else f"exited with status {exitCode}"
    try:
        decision = parseAnswer(hook, stdout)
    except HookFailed:
        raise HookFailed(how) from None
    if isinstance(decision, Refuse):
        return decision
    raise HookFailed(how + " without a refusal")


def retryDelays(retries: int, backoff: float, cap: float = 300.0) -> tuple[float, ...]:
    """
    Seconds to wait before each new try of a notification: C{backoff},
    doubling each time, at most C{cap}; C{retries} of them (so C{retries + 1}
    tries in all, a bounded time).
    """
    return tuple(min(backoff * 2**n, cap) for n in range(retries))


def refusal(hook: str, decision: Refuse) -> UploadError:
    """
    The client's answer for a hook's refusal: its status and reason.
    """
    error = UploadError("hook-refused", decision.reason)
    error.status = decision.status
    return error


def unavailable(hook: str) -> Busy:
    """
    The client's answer when a blocking hook failed: C{503}, try again
    (the staged data is kept, and the retry runs the hook again).
    """
    return Busy(
        "hook-failed",
        f"the server cannot check this upload now ({hook} hook unavailable); try again later",
        {b"Retry-After": b"%d" % RETRY_AFTER},
    )
