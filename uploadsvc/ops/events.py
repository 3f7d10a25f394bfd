"""
Lifecycle events of uploads, told to whoever listens (metrics, the log,
notification hooks), whatever protocol front end (path PUT, tus, the IETF
draft) or background job (expiry) caused them.

The front ends and jobs only call L{Events.emit}; they never know who
listens. A listener that fails is logged and the others still hear the
event: a broken metrics or log sink never fails an upload.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.logger import Logger

log = Logger()

#: The kinds of event (docs/operating.md lists them with their fields).
CREATED = "created"  # a new upload: first bytes staged, or a tus/draft creation
RESUMED = "resumed"  # a request continued an upload that had bytes staged
TAKEN_OVER = "taken-over"  # a newer request ended an older one on the same upload
COMPLETED = "completed"  # moved into place, durable
CANCELLED = "cancelled"  # removed by its client (DELETE, tus termination)
EXPIRED = "expired"  # removed by expiry
HOOK_FAILED = "hook-failed"  # a hook call failed (blocking, or a notification gave up)

KINDS = frozenset({CREATED, RESUMED, TAKEN_OVER, COMPLETED, CANCELLED, EXPIRED, HOOK_FAILED})


@attrs.frozen
class UploadEvent:
    """
    Something that happened to one upload.

    @ivar kind: one of L{KINDS}.
    @ivar key: the store's name for the upload (L{IUploadStore.keyFor}).
    @ivar path: its destination, relative to the root, when known.
    @ivar uploadId: its server-assigned id (tus, the draft), if any.
    @ivar protocol: C{"put"}, C{"tus"} or C{"ietf"}; C{None} for jobs.
    @ivar offset: bytes staged (or the file's size when complete).
    @ivar total: the upload's length, when known.
    @ivar requestId: the request that caused it, if a request did.
    @ivar credential: the name (never the secret) of the credential used.
    @ivar detail: more, per kind (e.g. a hook's name and error).
    """

    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    key: str
    path: str | None = None
    uploadId: str | None = None
    protocol: str | None = None
    offset: int | None = None
    total: int | None = None
    requestId: str | None = None
    credential: str | None = None
    detail: dict[str, Any] = attrs.field(factory=dict)

    def asDict(self) -> dict[str, Any]:
        """
        The event as JSON-ready fields (for logs and hooks).
        """
        return attrs.asdict(self)


Listener = Callable[[UploadEvent], None]


class Events:
    """
    Who hears lifecycle events: listeners subscribe, producers emit.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """
        Hear every event from now on; return what stops it.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: UploadEvent) -> None:
        """
        Tell every listener, in the order they subscribed; a failing
        listener is logged and does not stop the others.
        """
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.failure("an upload event listener failed on {kind}", kind=event.kind)
