"""
What the server does with its hooks: waits for the blocking ones (and turns
their answer into the client's), and tells the notifications, retried with
backoff, never blocking an upload and never lost silently.

Front ends (path PUT, tus, the draft) call L{Hooks.preCreate} and
L{Hooks.preFinish}; notifications follow the lifecycle events of
L{uploadsvc.ops.events} (L{Hooks.listenTo}).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Protocol, Sequence

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from uploadsvc.errors import BadRequest
from uploadsvc.ops.events import (
    CANCELLED,
    COMPLETED,
    CREATED,
    EXPIRED,
    HOOK_FAILED,
    Events,
    UploadEvent,
)
from uploadsvc.ops.hooks import (
    POST_CREATE,
    POST_EXPIRE,
    POST_FINISH,
    POST_TERMINATE,
    PRE_CREATE,
    PRE_FINISH,
    Decision,
    HookFailed,
    HookRequest,
    HookUpload,
    Proceed,
    Refuse,
    buildPayload,
    refusal,
    retryDelays,
    unavailable,
)
from uploadsvc.protocol.paths import UploadPath, parseRelativePath

log = Logger()

#: The notification that follows each lifecycle event.
NOTIFICATION_FOR = {
    CREATED: POST_CREATE,
    COMPLETED: POST_FINISH,
    CANCELLED: POST_TERMINATE,
    EXPIRED: POST_EXPIRE,
}

#: What L{Hooks.observe} callbacks are told of each call.
OK = "ok"  # the hook answered (to go on, for a blocking hook)
REFUSED = "refused"  # a blocking hook refused the upload
FAILED = "failed"  # no usable answer (a notification may try again)
GAVE_UP = "gave-up"  # a notification failed its last try

DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 1.0


class IHookTarget(Protocol):
    """
    Where hook events go: an HTTP endpoint or a command.
    """

    kind: str
    shown: str

    def call(self, hook: str, payload: bytes) -> Deferred[Decision]:
        """
        Deliver C{payload}; fire with the decision, or fail (L{HookFailed}).
        """


class Hooks:
    """
    The configured hooks of one server process.

    @ivar counts: calls per C{(hook, outcome)} since start (outcomes:
        L{OK}, L{REFUSED}, L{FAILED}, L{GAVE_UP}).
    """

    def __init__(
        self,
        targets: Sequence[IHookTarget],
        enabled: frozenset[str],
        clock: IReactorTime,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        """
        @param targets: called in this order (a blocking hook stops at the
            first refusal; a changed destination is what the next is told).
        @param enabled: the hooks that run; the others are never called.
        @param retries: new tries of a failed notification, after
            L{retryDelays}C{(retries, backoff)} seconds.
        """
        self._targets = list(targets)
        self._enabled = enabled if self._targets else frozenset()
        self._clock = clock
        self._delays = retryDelays(retries, backoff)
        self._events: Events | None = None
        self._observers: list[Callable[[str, str], None]] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        #: Notifications waiting for their next try, and calls under way.
        self._waiting: dict[IDelayedCall, tuple[str, IHookTarget, UploadEvent, int]] = {}
        self._calls: set[Deferred[Any]] = set()
        self._stopped = False

    def runs(self, hook: str) -> bool:
        """
        Whether C{hook} is enabled (and there is somewhere to send it).
        """
        return hook in self._enabled

    def observe(self, callback: Callable[[str, str], None]) -> Callable[[], None]:
        """
        Call C{callback(hook, outcome)} after every hook call (for metrics);
        return what stops it.
        """
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def listenTo(self, events: Events) -> Callable[[], None]:
        """
        Send the notifications that follow C{events}, and report failed
        hooks there (L{HOOK_FAILED}); return what stops listening.
        """
        self._events = events
        return events.subscribe(self._eventHappened)

    # --- blocking hooks ---------------------------------------------------

    def preCreate(
        self,
        upload: HookUpload,
        request: HookRequest | None,
        credential: str | None = None,
        requestId: str | None = None,
        prefix: bytes = b"",
    ) -> Deferred[UploadPath | None]:
        """
        Ask C{pre-create} whether a new upload may start.

        @param prefix: the mount prefix, for the new destination's URL.
        @return: fires with the destination the hook chose (checked against
            docs/protocol.md section 1 here; the disk's rules are the
            caller's), or L{None} to keep the request's; fails with the
            client's answer: the hook's refusal, a C{400} for a destination
            that breaks the path rules, or a C{503} when the hook failed.
        """

        async def ask() -> UploadPath | None:
            current = upload
            chosen: str | None = None
            for target in self._targets:
                decision = await self._ask(PRE_CREATE, target, current, request, credential, requestId)
                if decision.path is not None:
                    chosen = decision.path
                    current = attrs.evolve(current, path=chosen)
            if chosen is None:
                return None
            try:
                return parseRelativePath(chosen, prefix)
            except BadRequest as e:
                log.warn(
                    "the pre-create hook chose a destination that breaks the path rules "
                    "({code}): refused", code=e.code,
                )
                raise BadRequest(e.code, f"the destination chosen for this upload: {e.reason}")

        if not self.runs(PRE_CREATE):
            return succeed(None)
        return Deferred.fromCoroutine(ask())

    def preFinish(
        self,
        upload: HookUpload,
        request: HookRequest | None,
        credential: str | None = None,
        requestId: str | None = None,
    ) -> Deferred[None]:
        """
        Ask C{pre-finish} whether a fully received upload may be moved
        into place.

        @return: fails with the client's answer: the hook's refusal, or a
            C{503} when the hook failed.
        """

        async def ask() -> None:
            for target in self._targets:
                await self._ask(PRE_FINISH, target, upload, request, credential, requestId)

        if not self.runs(PRE_FINISH):
            return succeed(None)
        return Deferred.fromCoroutine(ask())

    async def _ask(
        self,
        hook: str,
        target: IHookTarget,
        upload: HookUpload,
        request: HookRequest | None,
        credential: str | None,
        requestId: str | None,
    ) -> Proceed:
        """
        Call one target for a blocking hook: its decision to go on, or
        raise the client's answer.
        """
        payload = buildPayload(hook, upload, request, credential, requestId)
        try:
            decision = await self._track(maybeDeferred(target.call, hook, payload))
        except Exception as e:
            reason = _reasonOf(e)
            self._count(hook, FAILED)
            log.error(
                "{hook} hook ({target}) failed for {path}: {reason}; answered 503",
                hook=hook, target=target.shown, path=upload.path or upload.key, reason=reason,
            )
            self._told(hook, upload, credential, requestId, reason, blocking=True)
            raise unavailable(hook) from None
        if isinstance(decision, Refuse):
            self._count(hook, REFUSED)
            log.info(
                "{hook} hook ({target}) refused {path}: {status} {reason}",
                hook=hook, target=target.shown, path=upload.path or upload.key,
                status=decision.status, reason=decision.reason,
            )
            raise refusal(hook, decision)
        self._count(hook, OK)
        return decision

    # --- notifications ----------------------------------------------------

    def _eventHappened(self, event: UploadEvent) -> None:
        """
        The L{Events} listener: start the notification that follows
        C{event}, after the current answer is on its way (it never waits
        for the hook).
        """
        hook = NOTIFICATION_FOR.get(event.kind)
        if hook is None or not self.runs(hook) or self._stopped:
            return
        for target in self._targets:
            self._clock.callLater(0, self._notify, hook, target, event, 0)

    def _notify(self, hook: str, target: IHookTarget, event: UploadEvent, tries: int) -> None:
        """
        One try of a notification; the next after its delay if it fails,
        or the give-up after the last.
        """
        if self._stopped:
            self._gaveUp(hook, target, event, "the server stopped before it was sent", tries)
            return
        try:
            payload = buildPayload(
                hook, _uploadOf(event), None, event.credential, event.requestId,
                {"event": event.kind, **event.detail},
            )
        except Exception:
            log.failure("building the {hook} event for {key}", hook=hook, key=event.key)
            self._gaveUp(hook, target, event, "its event could not be written as JSON", tries)
            return

        def failed(failure: Failure) -> None:
            self._count(hook, FAILED)
            reason = _reasonOf(failure.value)
            if not failure.check(HookFailed):
                log.failure("{hook} notification ({target})", failure, hook=hook, target=target.shown)
            if tries >= len(self._delays) or self._stopped:
                self._gaveUp(hook, target, event, reason, tries + 1)
                return
            delay = self._delays[tries]
            log.warn(
                "{hook} notification ({target}) for {path} failed: {reason}; "
                "trying again in {delay:g} s ({left} tries left)",
                hook=hook, target=target.shown, path=event.path or event.key,
                reason=reason, delay=delay, left=len(self._delays) - tries,
            )
            call = self._clock.callLater(delay, self._retry, hook, target, event, tries + 1)
            self._waiting[call] = (hook, target, event, tries + 1)

        d = self._track(maybeDeferred(target.call, hook, payload))
        d.addCallbacks(lambda _: self._count(hook, OK), failed)

    def _retry(self, hook: str, target: IHookTarget, event: UploadEvent, tries: int) -> None:
        self._waiting = {c: w for c, w in self._waiting.items() if c.active()}
        self._notify(hook, target, event, tries)

    def _gaveUp(
        self, hook: str, target: IHookTarget, event: UploadEvent, reason: str, tries: int
    ) -> None:
        """
        A notification that will not be delivered: a log line, a count and
        a L{HOOK_FAILED} event, never silence.

        @param tries: how many were made.
        """
        self._count(hook, GAVE_UP)
        log.error(
            "{hook} notification ({target}) for {path} not delivered after "
            "{tries} tries: {reason}",
            hook=hook, target=target.shown, path=event.path or event.key,
            tries=tries, reason=reason,
        )
        self._told(hook, _uploadOf(event), event.credential, event.requestId, reason, blocking=False)

    # --- bookkeeping ------------------------------------------------------

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._calls.add(d)

        def done(result: object) -> object:
            self._calls.discard(d)
            return result

        return d.addBoth(done)

    def _count(self, hook: str, outcome: str) -> None:
        self.counts[(hook, outcome)] += 1
        for observer in list(self._observers):
            try:
                observer(hook, outcome)
            except Exception:
                log.failure("a hook call observer failed")

    def _told(
        self,
        hook: str,
        upload: HookUpload,
        credential: str | None,
        requestId: str | None,
        reason: str,
        blocking: bool,
    ) -> None:
        if self._events is None:
            return
        self._events.emit(
            UploadEvent(
                HOOK_FAILED,
                upload.key,
                path=upload.path,
                uploadId=upload.uploadId,
                protocol=upload.protocol,
                offset=upload.offset,
                total=upload.total,
                requestId=requestId,
                credential=credential,
                detail={"hook": hook, "error": reason, "blocking": blocking},
            )
        )

    def stop(self) -> Deferred[Any]:
        """
        At shutdown: give up the notifications still waiting for a try
        (each logged and reported), and wait for the calls under way (each
        bounded by its time limit).
        """
        self._stopped = True
        waiting, self._waiting = self._waiting, {}
        for call, (hook, target, event, tries) in waiting.items():
            if call.active():
                call.cancel()
                self._gaveUp(hook, target, event, "the server stopped before its next try", tries)
        return DeferredList(list(self._calls), consumeErrors=True)


def _reasonOf(error: BaseException) -> str:
    if isinstance(error, HookFailed):
        return error.reason
    return f"{type(error).__name__}: {error}"


def _uploadOf(event: UploadEvent) -> HookUpload:
    return HookUpload(
        path=event.path,
        key=event.key,
        uploadId=event.uploadId,
        protocol=event.protocol,
        offset=event.offset or 0,
        total=event.total,
        metadata=event.detail.get("metadata") or {},
    )


class HookService(service.Service):
    """
    Stops L{Hooks} with the server: what is still waiting is reported as
    not delivered, and calls under way are waited for.
    """

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.hooks.stop()
