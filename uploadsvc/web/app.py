"""
The upload HTTP interface (docs/protocol.md) as a Klein app.

The handlers run when a request's headers are complete (see
L{uploadsvc.web.streaming}): they refuse from the headers, or accept and stream
the body into the store through L{deliverBody}. Errors become responses in
one place, L{UploadApp.uploadError}.
"""

from __future__ import annotations

import base64
import encodings.idna  # noqa: F401  (see _RawPathRoot.render)
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Coroutine, Iterator, Sequence

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from uploadsvc.errors import (
    BadRequest,
    Busy,
    Conflict,
    Forbidden,
    InsufficientStorage,
    MethodNotAllowed,
    NotFound,
    StorageFault,
    TooLarge,
    UploadError,
    storageRefusal,
)
from uploadsvc.ops.events import (
    CANCELLED,
    COMPLETED,
    CREATED,
    RESUMED,
    TAKEN_OVER,
    Events,
    UploadEvent,
)
from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.ops.hookrunner import Hooks
from uploadsvc.ops.hooks import PRE_CREATE, PRE_FINISH, HookUpload, requestFacts
from uploadsvc.protocol.cors import CorsPolicy
from uploadsvc.protocol.decisions import (
    AlreadyComplete,
    Plan,
    Stored,
    checkQuery,
    offsetHeaders,
    planFinish,
    planWrite,
    queryCompletes,
)
from uploadsvc.protocol.digests import DigestSet, Hasher, newHasher
from uploadsvc.protocol.ietf import DEFAULT_VERSIONS
from uploadsvc.protocol.forwarded import TrustedProxies
from uploadsvc.protocol.paths import UploadPath, parseUploadPath
from uploadsvc.protocol.refusals import (
    METHODS, METHODS_WITH_DOWNLOADS, UNKNOWN, Facts, firstRefusal,
)
from uploadsvc.protocol.scopes import (
    DELETE, DOWNLOAD, UPLOAD, Access, Credential, checkScope, outOfScope, requestOperation,
)
from uploadsvc.protocol.tus import tusPath
from uploadsvc.protocol.ranges import (
    ContentRange,
    RangeQuery,
    checkRangeLength,
    parseContentRange,
)
from uploadsvc.sink import HIGH_WATER, LOW_WATER, FileSink, IDiskRunner
from uploadsvc.storage.filestore import isNoSpace
from uploadsvc.storage.hashing import verifyStaged
from uploadsvc.storage.interfaces import IStagedUpload, ITakeover, IUploadStore, Target, UploadId
from uploadsvc.storage.writers import TakenOver, WriterRegistry
from uploadsvc.web.answers import PUT_ANSWERS, Answers, completed, refuse, status
from uploadsvc.web.access import accessOf, noteAccess
from uploadsvc.web.auth import Authenticator
from uploadsvc.web.bodyinhand import BodyInHand
from uploadsvc.web.contentdigest import ContentDigester
from uploadsvc.web.download import serveFile
from uploadsvc.web.ietf import DraftFrontEnd
from uploadsvc.web.cors import applyCors
from uploadsvc.web.forwarded import notePublicBase
from uploadsvc.web.receiver import Outcome, UploadReceiver
from uploadsvc.web.requestheaders import contentLength, declaredEnd, digestHeader, digestsB64
from uploadsvc.web.streaming import abortRequest, deliverBody
from uploadsvc.web.uploadpage import servePage

log = Logger()

#: Seconds between two tries of a writer waiting for another process to
#: let go of an upload (docs/protocol.md section 5).
LOCK_RETRY = 0.05

#: Bodies of at most this many bytes (by their C{Content-Length}) are
#: hashed on the reactor thread as they arrive (30-55 microseconds for
#: 64 KiB, by CPU) instead of on a digest lane of the disk pool: a
#: hand-off to a thread and back costs a small upload more than that.
#: One that is whole once its upload is begun and then completes it is
#: written, hashed and completed in one pool trip (L{UploadApp._takeSmallBody}).
SMALL_BODY = 256 * 1024

#: 64 GiB: large enough for field laptops' disk images, small enough that a
#: typo'd Content-Length is refused. Configurable with --max-upload-size.
DEFAULT_MAX_UPLOAD = 64 * 1024**3


@attrs.frozen
class Config:
    """
    The server's policy.

    @ivar prefix: mount prefix stripped from request paths (e.g. C{b"/up"}).
    @ivar minFreeBytes: refuse (507) data that would leave less free space.
    @ivar maxUploads: uploads written at once before 503 (0: no limit).
    @ivar lockWait: seconds a request waits for another process to let go
        of an upload before 503.
    @ivar expireAfter: seconds without a byte after which an incomplete
        upload expires (0: never).
    @ivar allowDownload: serve complete files to C{GET} (L{uploadsvc.web.download}).
    @ivar cors: which browser origins may use the server (off by default).
    @ivar proxies: the peers whose C{Forwarded}/C{X-Forwarded-*} headers
        decide the URLs handed out.
    @ivar uploadPage: serve the upload page at C{/.upload/}.
    """

    allowOverwrite: bool = False
    allowDelete: bool = False
    maxUploadSize: int = DEFAULT_MAX_UPLOAD
    prefix: bytes = b""
    minFreeBytes: int = 0
    maxUploads: int = 0
    highWater: int = HIGH_WATER
    lowWater: int = LOW_WATER
    lockWait: float = 5.0
    expireAfter: float = 24 * 3600.0
    allowDownload: bool = False
    #: Interop versions of the resumable-upload draft served (section 9);
    #: empty: the draft is off.
    ietfVersions: tuple[int, ...] = DEFAULT_VERSIONS
    cors: CorsPolicy = CorsPolicy()
    proxies: TrustedProxies = TrustedProxies()
    uploadPage: bool = True


def _refusal(failure: Failure) -> bool:
    """
    A cancel, or a 4xx refusal (a browser retrying a cut PATCH at a stale
    offset gets 409 after it left): an answer nobody waits for, not news.
    """
    if failure.check(CancelledError):
        return True
    return isinstance(failure.value, UploadError) and failure.value.status < 500


def _shield(d: Deferred) -> Deferred:
    """
    Klein cancels a handler's Deferred when the client goes away; the storage
    work behind it (fsync, release) must run to its end anyway.
    """
    out: Deferred = Deferred(lambda _: None)

    def forward(result: object) -> None:
        if not out.called:
            out.callback(result)  # a Failure errbacks
        elif isinstance(result, Failure) and not _refusal(result):
            # Nobody waits for the answer any more, but the failure is news.
            log.failure("uploadsvc request failed after its client went away", result)

    d.addBoth(forward)
    return out


def _serve(request: Any, work: Coroutine[Any, Any, bytes | None]) -> Deferred:
    """
    Run a handler's coroutine for C{request}, shielded from Klein's cancel
    (L{_shield}); its access line waits for it when the client went away.
    """
    running = Deferred.fromCoroutine(work)
    notesFor(request).work = running
    return _shield(running)


class _RawPathRoot(Resource):
    """
    Hands the Klein app every path, leaving path rules to the handlers.

    twisted.web splits and percent-decodes the path for routing (turning
    C{%2F} into a slash) and Klein refuses non-UTF-8 paths with its own
    answer; uploadsvc parses the raw path itself, so Klein only sees a
    neutral path; the reserved endpoints (/.tus/, /.uploads/, /.upload/) are
    routed from here and from L{UploadApp.dispatch}.

    Klein also decodes the C{Host} header as UTF-8, and answers one that is
    not with a 400 of its own after logging an error: a client could fill
    the log at will. Such a request is refused here instead, like any other.

    Before anything else, CORS: a preflight is answered here, before
    credentials are checked (browsers send none on one), and every other
    answer to an allowed origin gets its headers.
    """

    isLeaf = True

    def __init__(self, inner: Any, config: Config = Config()) -> None:
        super().__init__()
        self._inner = inner
        self._config = config

    def render(self, request: Any) -> Any:
        preflight = applyCors(request, self._config.cors)
        if preflight is not None:
            return preflight
        try:
            host = request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return refuse(request, BadRequest("bad-host", "the Host header is not UTF-8"))
        try:
            # What Klein's router (werkzeug) does with it; it would answer
            # a name it cannot encode (a..b) with a 500 of its own. (The
            # codec is imported with this module: imported on first use, it
            # needs a file descriptor, and with none left every request was
            # a 500.)
            host.partition(":")[0].encode("idna")
        except UnicodeError:
            return refuse(request, BadRequest("bad-host", "the Host header is not a host name"))
        try:
            notePublicBase(request, self._config.proxies, self._config.prefix)
        except UploadError as e:
            return refuse(request, e)
        page = servePage(request, self._config.prefix) if self._config.uploadPage else None
        if page is not None:
            return page
        request.postpath = [b""]
        return self._inner.render(request)


class UploadApp:
    """
    The HTTP interface of one store.
    """

    app = Klein()

    def __init__(
        self,
        store: IUploadStore,
        runner: IDiskRunner,
        config: Config = Config(),
        writers: WriterRegistry | None = None,
        auth: Authenticator | None = None,
        clock: IReactorTime | None = None,
        events: Events | None = None,
        latency: Callable[[str, float], None] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        """
        @param store: where uploads are kept; it must also provide
            L{ITakeover} (writers of other processes ask for uploads).
        @param auth: who may send requests; L{None} lets everyone (a front
            end authenticates, or the server is local).
        @param clock: what waits for another process's lock run on (the
            global reactor if L{None}).
        @param events: where lifecycle events of uploads are told (metrics,
            logs and hooks listen there).
        @param latency: told how long each C{"fsync"} (an upload left
            incomplete made durable) and C{"completion"} (moved into place)
            took, in seconds of C{clock}, disk-pool wait included (metrics).
        @param hooks: the blocking hooks to ask (pre-create, pre-finish);
            L{None} for none.
        """
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.store = store
        self.takeover = ITakeover(store)
        self.runner = runner
        self.config = config
        self.writers = (
            writers if writers is not None
            else WriterRegistry(clock=self.clock, maxAge=config.expireAfter)
        )
        self._staging: dict[str, IStagedUpload] = {}
        #: Keys whose completion runs in the disk pool now (L{_completion}).
        self._completing: set[str] = set()
        #: The code of the storage fault that the last look for takeovers
        #: met (logged once), or L{None}.
        self._lookFailing: str | None = None
        #: Totals told by the headers of requests that hold an upload here
        #: but whose staged file is not open yet (see L{_writerTotal}).
        self._announced: dict[str, int] = {}
        self.auth = auth
        self.events = events if events is not None else Events()
        self.latency = latency if latency is not None else (lambda what, seconds: None)
        #: The resumable-upload draft's front end (section 9), if on.
        self.ietf = DraftFrontEnd(self) if config.ietfVersions else None
        self.hooks = hooks

    @property
    def tus(self) -> Any:
        """
        The tus 1.0 front end at C{/.tus/} (L{uploadsvc.web.tus}).
        """
        front = self.__dict__.get("_tus")
        if front is None:
            from uploadsvc.web.tus import TusFrontEnd

            front = self.__dict__["_tus"] = TusFrontEnd(self)
        return front

    def resource(self) -> Resource:
        return _RawPathRoot(self.app.resource(), self.config)

    def _emit(
        self, kind: str, request: Any, target: Target, offset: int | None = None,
        total: int | None = None, destination: UploadPath | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """
        Tell a lifecycle event of the upload C{target} caused by C{request},
        as the request's front end (its notes) names it.

        @param destination: where an upload named by its id lands, if known.
        @param detail: more for listeners (tus: C{{"metadata": ...}} for hooks).
        """
        notes = notesFor(request)
        if isinstance(target, UploadId):
            uploadId: str | None = target.value
            path = destination.relative if destination is not None else notes.path
        else:
            uploadId, path = notes.uploadId, target.relative
        self.events.emit(UploadEvent(
            kind, self.store.keyFor(target), path=path, uploadId=uploadId,
            protocol=notes.protocol, offset=offset, total=total,
            requestId=notes.requestId, credential=notes.credential, detail=dict(detail or {}),
        ))

    async def _timed(self, what: str, f: Callable[..., Any], *args: Any) -> Any:
        """
        C{f(*args)} in the disk pool, its time told to L{latency}.
        """
        began = self.clock.seconds()
        result = await self.runner.run(f, *args)
        self.latency(what, self.clock.seconds() - began)
        return result

    @contextmanager
    def _completion(self, key: str) -> Iterator[None]:
        """
        While C{key}'s upload completes (from the decision to its answer),
        its writer is not ended by a newer request or another process's
        takeover (see L{_acquire}); L{TakenOver} at once if it was asked to
        let go before (its client is being dropped: nothing lands that no
        client is told of).
        """
        if self.writers.interrupted(key):
            raise TakenOver("taken-over", "a newer request took over this upload")
        self._completing.add(key)
        try:
            yield
        finally:
            self._completing.discard(key)

    def checkTakeovers(self) -> Deferred | None:
        """
        End this process's requests for uploads that a writer in another
        process waits for (docs/protocol.md section 5 across workers and hosts).
        Called every half second by the service.
        """
        if not self._staging:
            return None

        def interrupt(keys: list[str]) -> None:
            stale = [
                key for key, staged in self._staging.items()
                if not self.takeover.holdsCurrentLock(staged)
            ]
            if stale:
                log.error(
                    "the lock file under {root}/.uploadsvc was removed or replaced while "
                    "{count} uploads were being written: ending them (their bytes are "
                    "kept) so that every process locks the same file again",
                    root=getattr(self.store, "root", "the store's root"), count=len(stale),
                )
            # Only requests that hold the store's lock: a request of ours
            # that is itself waiting for another process made that marker.
            for key in [*keys, *stale]:
                if key in self._staging:
                    self.writers.interrupt(key)

        d = self.runner.run(self.takeover.pendingTakeovers).addCallback(interrupt)
        d.addCallback(lambda _: setattr(self, "_lookFailing", None))
        # A failed look must not stop the timer that calls this.
        return d.addErrback(self._lookFailed)

    def _lookFailed(self, failure: Failure) -> None:
        """
        Log a failed look for takeovers once per cause, not twice a second:
        a storage fault (the root removed) lasts as long as it lasts, and
        every request reports it anyway.
        """
        if not failure.check(UploadError):
            log.failure("looking for takeovers", failure)
            return
        cause = failure.value.code
        if cause != self._lookFailing:
            self._lookFailing = cause
            log.error(
                "looking for takeovers: {error} (logged once until it changes)",
                error=getattr(failure.value, "detail", failure.value.reason),
            )

    def recoverStaged(self) -> Deferred:
        """
        At service start: finish the uploads that a crash left fully staged
        but not moved into place (L{IUploadStore.recover}), and log each.
        """

        def report(done: list[tuple[str, str]]) -> None:
            for relative, what in done:
                log.info("staged upload {path}: {what}", path=relative, what=what)

        if self.hooks is not None and self.hooks.runs(PRE_FINISH):
            # Finishing them here would skip the hook: each stays staged
            # until its client's retry (a status query) finishes it.
            log.info("pre-finish hook on: fully staged uploads wait for their clients' retry")
            return succeed(None)

        d = self.runner.run(self.store.recover, self.config.allowOverwrite)
        return d.addCallback(report).addErrback(
            lambda f: log.failure("recovering staged uploads", f)
        )

    # --- routing --------------------------------------------------------

    # Every method reaches dispatch (Klein's own refusal of a method would be
    # a 500 here, and would come before the credentials check).
    @app.route("/", branch=True)
    def dispatch(self, request: Any) -> Deferred | bytes:
        credential, credentials = (
            _attempt(self.auth.check, request) if self.auth is not None else (None, None)
        )
        # Who it is, for logs and hooks: a name, never the token.
        notesFor(request).credential = credential.name if credential is not None else None
        # What the front ends check each upload's destination against.
        noteAccess(request, Access(
            credential, credentials is None and credential is None
            and self.auth is not None and self.auth.enabled,
        ))
        if self.ietf is not None and self.ietf.owns(request):
            # /.uploads/: the draft's upload resources (section 9).
            if credentials is not None:
                raise credentials
            return _serve(request, self.ietf.serve(request))
        rest = tusPath(request.uri.split(b"?", 1)[0], self.config.prefix)
        if rest is not None:
            # tus at /.tus/ (docs/protocol-tus.md): the same credentials.
            if credentials is not None:
                raise credentials
            return _serve(request, self.tus.handle(request, rest))
        path, pathError = _attempt(self._path, request)
        operation, scope = None, None
        if credentials is None and pathError is None:
            operation, scope = _attempt(self._scope, credential, path, request.method)
        refusal = firstRefusal(
            Facts(
                credentials=credentials, path=pathError, method=request.method,
                methods=self._methods(),
                scope=scope,
            )
        )
        if refusal is not None:
            raise refusal
        if self.ietf is not None:
            draft = self.ietf.onPath(request, path)  # a creation, OPTIONS, or None
            if draft is not None:
                return _serve(request, draft)
        handlers: dict[bytes, Callable[[Any, UploadPath], Any]] = {
            b"PUT": self._put, b"POST": self._put,
            b"HEAD": partial(self._head, operation=operation, credential=credential),
            b"DELETE": partial(self._delete, operation=operation),
            b"GET": self._get,
        }
        return _serve(request, handlers[request.method](request, path))

    def _methods(self) -> tuple[bytes, ...]:
        """
        The methods a file path answers (405 for others).
        """
        methods = METHODS_WITH_DOWNLOADS if self.config.allowDownload else METHODS
        return methods + ((b"OPTIONS",) if self.ietf is not None else ())

    def _scope(self, credential: Credential | None, path: UploadPath, method: bytes) -> str | None:
        """
        The operation the request performs, if its credential may perform it
        on C{path} (L{uploadsvc.protocol.scopes}).

        @raise Forbidden: C{out-of-scope}.
        """
        operation = requestOperation(credential, method, self.config.allowDownload)
        if operation is not None:
            checkScope(credential, path, operation)
        return operation

    @app.handle_errors(UploadError)
    def uploadError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, StorageFault):
            # The operator's one line: the client only gets the reason.
            log.error(
                "{method} {uri}: {status} {code}: {detail}",
                method=request.method.decode("latin-1"), uri=_loggable(request.uri),
                status=error.status, code=error.code, detail=error.detail,
            )
        return refuse(request, error)

    @app.handle_errors(Exception)
    def internalError(self, request: Any, failure: Failure) -> bytes:
        if failure.check(CancelledError):
            return b""
        refusal = storageRefusal(failure.value)
        if refusal is not None:
            # The disk's answer, not a bug: one line, no traceback.
            log.error(
                "{method} {uri}: {status} {code}: {error}",
                method=request.method.decode("latin-1"), uri=_loggable(request.uri),
                status=refusal.status, code=refusal.code, error=failure.value,
            )
            return refuse(request, refusal)
        log.failure("uploadsvc internal error", failure)
        return refuse(request, UploadError("internal", "internal server error"))

    def _path(self, request: Any) -> UploadPath:
        raw = request.uri.split(b"?", 1)[0]
        return parseUploadPath(raw, self.config.prefix)

    # --- hooks (docs/operating.md) ----------------------------------

    def _asks(self, hook: str) -> bool:
        return self.hooks is not None and self.hooks.runs(hook)

    def askPreCreate(self, request: Any, upload: HookUpload) -> Deferred[UploadPath | None]:
        """
        The pre-create hook, for any front end: before a new upload takes
        a byte (its body not read yet).

        @return: fires with the destination the hook chose instead (section
            1 checked; the disk's rules are the caller's), or L{None}; fails
            with the client's answer (the hook's refusal, or 503).
        """
        if self.hooks is None:
            return succeed(None)
        return self.hooks.preCreate(
            upload, requestFacts(request), notesFor(request).credential, notesFor(request).requestId,
            self.config.prefix,
        )

    def askPreFinish(self, request: Any, upload: HookUpload) -> Deferred[None]:
        """
        The pre-finish hook, for any front end: after the last byte and the
        digest check, before the rename.

        @return: fails with the client's answer: the hook's refusal (the
            caller discards the staged data) or a 503 with code
            C{hook-failed} (the caller keeps it, durably).
        """
        if self.hooks is None:
            return succeed(None)
        return self.hooks.preFinish(
            upload, requestFacts(request), notesFor(request).credential, notesFor(request).requestId
        )

    async def _preCreate(self, request: Any, path: UploadPath, total: int | None) -> UploadPath:
        """
        Ask pre-create about a request that starts a new upload at C{path};
        return where it goes (C{path}, or the hook's choice, then told to
        the client as C{Location} once the request is accepted there: see
        L{_putAt}).
        """
        gone = _clientGone(request)
        upload = HookUpload(path.relative, self.store.keyFor(path), protocol="put", total=total)
        chosen = await self.askPreCreate(request, upload)
        if gone():
            raise CancelledError("the client went away while the pre-create hook ran")
        if chosen is None or chosen == path:
            return path
        # The credential's folder binds the hook's choice too.
        checkScope(accessOf(request).credential, chosen, UPLOAD)
        log.info("pre-create hook: {old} goes to {new}", old=path.relative, new=chosen.relative)
        return chosen

    async def checkBeforeFinish(self, request: Any, upload: HookUpload, staged: IStagedUpload) -> None:
        """
        Ask pre-finish about a fully received upload (for any front end
        that completes a L{IStagedUpload}): a refusal discards it; a failed
        hook keeps it, durable and fully staged, for the client's retry,
        which asks again. Either way the client's answer is raised.
        """
        try:
            await self.askPreFinish(request, upload)
        except UploadError as e:
            if e.code != "hook-failed":
                await self.runner.run(self.store.discard, staged)
                raise
            await self.runner.run(staged.syncAndClose)
            if staged.hasher is not None:
                self.writers.keepHashState(
                    upload.key, staged.info["generation"], staged.offset, staged.hasher
                )
            raise

    # --- status ---------------------------------------------------------

    async def _head(
        self, request: Any, path: UploadPath, operation: str | None = UPLOAD,
        credential: Credential | None = None,
    ) -> bytes | None:
        if operation == DOWNLOAD:
            # A credential that may download but not upload: GET's answer.
            return await serveFile(request, self.store, self.runner, path, head=True)
        key = self.store.keyFor(path)
        before = self._writerTotal(key)
        # strict: a link (or FIFO) at the path is no complete upload (409).
        stored = await self.runner.run(self.store.inspect, path, True, True)
        # A writer may have made the data file while the disk was read.
        total = before if before is not None else self._writerTotal(key)
        query = checkQuery(_known(total, stored), None)
        if (
            not query.incomplete and self.config.allowDownload
            and (credential is None or credential.allows(DOWNLOAD))
        ):
            # A complete file: the headers GET would send (ETag and all).
            try:
                return await serveFile(request, self.store, self.runner, path, head=True)
            except NotFound:
                pass  # removed meanwhile: the status as it was read
        return status(request, query, forPut=False)

    async def _get(self, request: Any, path: UploadPath) -> bytes | None:
        return await serveFile(request, self.store, self.runner, path, head=False)

    def _writerTotal(self, key: str) -> int | None:
        """
        The total that a request of this process writing C{key} knows but
        may not have written down yet: the store records it only when a
        request ends without completing the upload, and the data file exists
        from the moment the request opens it.
        """
        staged = self._staging.get(key)
        if staged is not None:
            return staged.info.get("total")  # type: ignore[no-any-return]
        return self._announced.get(key)

    # --- cancel ---------------------------------------------------------

    async def _delete(
        self, request: Any, path: UploadPath, operation: str | None = DELETE
    ) -> bytes:
        # The path rules first (403 through a link, 409 under a file), before
        # a writer of the upload is asked to let go for a refused request.
        await self.runner.run(self.store.inspect, path, False)
        key = self.store.keyFor(path)
        release = await self._acquire(request, path)
        try:
            if await self._whenUnlocked(request, key, self.store.cancel, path):
                self.writers.forgetHashState(key)
                self._emit(CANCELLED, request, path)
                request.setResponseCode(204)
                return b""
            stored = await self.runner.run(self.store.inspect, path, True, True)
            if stored.completeSize is None:
                raise NotFound("not-found", "no upload at this path")
            if not self.config.allowDelete:
                raise MethodNotAllowed(
                    "delete-disabled", "deleting complete files is disabled",
                    {b"Allow": (b"GET, " if self.config.allowDownload else b"") + b"PUT, POST, HEAD"},
                )
            if operation != DELETE:
                # A credential that may only cancel its uploads.
                raise outOfScope("this credential may not delete files")
            await self.runner.run(self.store.deleteComplete, path)
            request.setResponseCode(204)
            return b""
        finally:
            release()

    # --- write ----------------------------------------------------------

    def _acquire(self, request: Any, path: Target, key: str | None = None) -> Deferred:
        """
        Become the writer of C{path} in this process (L{WriterRegistry.acquire}).

        @param key: C{path}'s key, if the caller has it (one string kept per
            open upload rather than one more).
        """
        if key is None:
            key = self.store.keyFor(path)

        def interrupt() -> None:
            if key in self._completing:
                # Its rename cannot be called back: it answers its client
                # and lets go, and the next writer finds the file complete.
                return
            staged = self._staging.get(key)
            self._emit(
                TAKEN_OVER, request, path, staged.offset if staged is not None else None
            )
            abortRequest(request)

        return self.writers.acquire(key, interrupt)

    def _put(self, request: Any, path: UploadPath) -> Coroutine[Any, Any, bytes | None]:
        # The coroutine itself, not one more awaiting it: each coroutine's
        # frame is kept for as long as its upload is open.
        return self._putAt(request, path, False)

    async def _putAt(
        self, request: Any, path: UploadPath, preCreated: bool, moved: bool = False
    ) -> bytes | None:
        """
        A write or a status query.

        @param preCreated: the pre-create hook has let this request start a
            new upload at C{path} (it chose C{path}, perhaps).
        @param moved: the hook chose C{path} instead of the request's: once
            the upload begins there, every answer carries it as C{Location}
            (a refusal there names no place).
        """
        length = contentLength(request)
        rng, rangeError = _readRange(request.requestHeaders, length)
        fields, fieldError = _attempt(_digestFields, request)
        digests, contentDigests = fields or (DigestSet(), DigestSet())
        query = isinstance(rng, RangeQuery)
        key = self.store.keyFor(path)
        # Refusals in docs/protocol.md's order (protocol.refusals), as the
        # facts become known: here the headers' (413).
        facts = self._headerFacts(
            request.method, declaredEnd(rng, length), query, rangeError, fieldError,
            rng.first if isinstance(rng, ContentRange) else 0,
        )
        if query or self.writers.isHeld(key):
            # The disk's refusals before a writer of the upload here is
            # asked to let go for a request that is refused anyway.
            writerTotal = self._writerTotal(key)
            await self.runner.run(self._check, path, facts, query)
            if isinstance(rng, RangeQuery):
                return await self._query(request, path, key, rng, writerTotal, digests)
        decide = partial(
            planWrite,
            contentRange=rng if isinstance(rng, ContentRange) else None,
            contentLength=length,
            allowOverwrite=self.config.allowOverwrite,
        )
        guard = None if preCreated or not self._asks(PRE_CREATE) else _guardCreation
        release = self._announce(key, rng, length, await self._acquire(request, path, key))
        try:
            began = await self._whenUnlocked(
                request, key, self._checkAndBegin, path, facts, decide, digestsB64(digests),
                self.writers.takeHashState(key), guard,
            )
        except _Creating:
            # A new upload: the hook decides, with the upload let go of
            # meanwhile; then everything is decided again for where it said.
            release()
            total = rng.total if isinstance(rng, ContentRange) else length
            chosen = await self._preCreate(request, path, total)
            return await self._putAt(request, chosen, True, chosen != path)
        except BaseException:
            release()
            raise
        if moved:
            request.setHeader(b"Location", path.location)
        digester = ContentDigester(contentDigests) if contentDigests else None
        return await self._write(request, path, key, rng is None, digests, digester, release, began)

    def _headerFacts(
        self,
        method: bytes,
        end: int | None,
        query: bool = False,
        rangeError: UploadError | None = None,
        fieldError: UploadError | None = None,
        start: int = 0,
    ) -> Facts:
        """
        The facts a write's headers tell (with the server's limits and how
        busy it is), its first refusal raised.

        @param end: the largest size the headers claim.
        @param start: the offset where the body begins.
        """
        facts = Facts(
            credentials=None,
            path=None,
            method=method,
            declaredEnd=end,
            declaredStart=start,
            maxUploadSize=self.config.maxUploadSize,
            minFreeBytes=self.config.minFreeBytes,
            busy=bool(
                self.config.maxUploads and self.writers.busy() >= self.config.maxUploads
            ),
            query=query,
            rangeError=rangeError,
            fieldError=fieldError,
        )
        refusal = firstRefusal(facts)
        if refusal is not None:
            raise refusal
        return facts

    async def _query(
        self,
        request: Any,
        path: UploadPath,
        key: str,
        rng: RangeQuery,
        writerTotal: int | None,
        digests: DigestSet,
    ) -> bytes:
        """
        Answer a C{bytes */T} status query (its refusals checked), recording
        what it tells.
        """
        # Decided and recorded under the upload's state lock, never its
        # writer lock: a query neither waits for a writer nor ends one.
        total = rng.total
        stored = await self.runner.run(
            self.store.record, path, total, digestsB64(digests),
            lambda stored: checkQuery(_known(writerTotal, stored), total),
        )
        if queryCompletes(stored) and not self.writers.isHeld(key):
            return await self._finishStaged(request, path, key, digests)
        return status(request, stored, forPut=True)

    async def _whenUnlocked(
        self, request: Any, key: str, f: Callable[..., Any], *args: Any
    ) -> Any:
        """
        Run the blocking C{f(*args)}, which takes C{key}'s writer lock
        without waiting (L{Busy} C{"locked"} when another process holds it),
        in the disk pool. While another process holds the lock, ask it to
        let go (a takeover marker) and try again every L{LOCK_RETRY} seconds
        on the clock, never sleeping in the pool, for up to
        C{config.lockWait} seconds; then 503, the marker withdrawn. A client
        that goes away meanwhile ends the wait, so that nobody's request
        takes the upload from its writer (and perhaps starts it over).
        """
        deadline = self.clock.seconds() + self.config.lockWait
        gone = _clientGone(request)
        asked = False
        try:
            while True:
                try:
                    return await self.runner.run(self._tryLocked, key, f, *args)
                except Busy as e:
                    if e.code != "locked":
                        raise
                asked = True
                if self.clock.seconds() >= deadline:
                    raise Busy("locked", "the upload is being written by another process")
                await deferLater(self.clock, LOCK_RETRY)
                if gone():
                    raise CancelledError("the client went away while waiting for the upload")
        except BaseException:
            if asked:
                # Taking the lock withdraws it; giving up (or failing) must too.
                await self.runner.run(self.takeover.dropTakeover, key).addErrback(
                    lambda f: log.failure("withdrawing a takeover request", f)
                )
            raise

    def _tryLocked(self, key: str, f: Callable[..., Any], *args: Any) -> Any:
        """
        Blocking: C{f(*args)}; when it finds C{key} locked by another
        process, leave (or make again) the takeover marker asking it to let
        go, then raise.
        """
        try:
            return f(*args)
        except Busy as e:
            if e.code == "locked":
                self.takeover.askTakeover(key)
            raise

    def _announce(
        self,
        key: str,
        rng: ContentRange | RangeQuery | None,
        length: int | None,
        release: Callable[[], None],
    ) -> Callable[[], None]:
        """
        Note the total that the headers of the request now holding C{key}
        tell (a range's C{T}, a plain PUT's length), for status queries that
        find its data file before it is registered as writing; return
        C{release} extended to forget it.
        """
        if isinstance(rng, ContentRange):
            total = rng.total
        else:
            total = length if rng is None else None
        if total is not None:
            self._announced[key] = total

        def releaseAndForget() -> None:
            self._announced.pop(key, None)
            release()

        return releaseAndForget

    async def _finishStaged(
        self, request: Any, path: UploadPath, key: str, digests: DigestSet
    ) -> bytes:
        """
        Complete an upload that a status query found fully staged (see
        L{queryCompletes}), as its last write would have: digests checked,
        atomic rename, answered like section 2. Nobody here writes it (the
        caller checked); if a request of another process does, that request
        finishes it, and this one answers the status.
        """
        release = await self._acquire(request, path)  # granted at once

        def decide(stored: Stored) -> Plan:
            plan = planFinish(stored)
            if plan is None:
                raise _StateChanged(stored)
            return plan

        try:
            stored, _, staged = await self.runner.run(
                self.store.begin, path, decide, {}, self.writers.takeHashState(key),
            )
        except (Busy, _StateChanged) as e:
            release()
            if isinstance(e, _StateChanged):
                now = e.stored
            else:
                now = await self.runner.run(self.store.inspect, path)
            return status(request, checkQuery(now, None), forPut=True)
        except BaseException:
            release()
            raise
        assert staged is not None
        try:
            return await self._complete(request, path, staged, stored, digests)
        finally:
            try:
                await self._close(staged)
            finally:
                release()

    def _checkAndBegin(
        self,
        path: Target,
        facts: Facts,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: Any,
        guard: Callable[[Plan | AlreadyComplete], None] | None = None,
    ) -> tuple[Stored, Plan | AlreadyComplete, IStagedUpload | None]:
        """
        Blocking: the refusals that need the disk (L{_check}), then
        L{IUploadStore.begin} (which never waits for the lock), whose decision
        under the lock is refused in the same order (409, or 503 unless it
        is a retried final request).

        @param guard: sees the decision once no refusal applies, and may
            raise to go no further (see L{_guardCreation}).
        """
        facts = self._checkWrite(path, facts)

        def decideInOrder(stored: Stored) -> Plan | AlreadyComplete:
            state: Plan | AlreadyComplete | UploadError
            try:
                state = decide(stored)
            except UploadError as e:
                state = e
            refusal = firstRefusal(attrs.evolve(facts, state=state))
            if refusal is not None:
                raise refusal
            assert not isinstance(state, UploadError)
            if guard is not None:
                guard(state)
            return state

        return self.store.begin(path, decideInOrder, digests, hashState)

    def _checkWrite(self, path: Target, facts: Facts) -> Facts:
        """
        Blocking: L{_check} for a write, walking the path only when it can
        change the answer. C{begin} looks at the path itself (the same
        C{inspect}, which raises the link's 403 before anything is
        decided), so when no refusal follows from the free space and the
        facts known so far, the walk here is left to it: one walk of the
        path per write instead of two (about 55 microseconds of CPU each).
        Only when a refusal is found (which a link on the way outranks) is
        the path walked first.
        """
        known = attrs.evolve(facts, link=None, freeBytes=self.store.freeBytes())
        if firstRefusal(known) is None:
            return attrs.evolve(known, state=UNKNOWN)
        return self._check(path, facts, False)

    def _check(self, path: Target, facts: Facts, query: bool) -> Facts:
        """
        Blocking: learn what the disk tells (a symbolic link on the way, the
        free space, and for a status query what is stored), and raise the
        first refusal that the facts known then give.

        @return: C{facts} with what was learnt.
        """
        link: UploadError | None = None
        state: Any = UNKNOWN
        try:
            # strict for a query: a link at the path is no complete upload.
            self.store.inspect(path, False, query)
        except Forbidden as e:
            link = e
        except UploadError as e:
            if query:
                state = e  # what is stored is decided for a write under its lock
        facts = attrs.evolve(facts, link=link, freeBytes=self.store.freeBytes(), state=state)
        refusal = firstRefusal(facts)
        if refusal is not None:
            raise refusal
        return attrs.evolve(facts, state=UNKNOWN)

    async def _write(
        self,
        request: Any,
        path: Target,
        key: str,
        endsAtBody: bool,
        digests: DigestSet,
        digester: ContentDigester | None,
        release: Callable[[], None],
        began: tuple[Stored, Plan | AlreadyComplete, IStagedUpload | None],
        answers: Answers = PUT_ANSWERS,
        lands: bool = True,
        completes: bool | None = None,
        overflow: Callable[[], UploadError] | None = None,
    ) -> bytes | None:
        """
        Stream the body of an accepted write into the staged upload and
        answer (completion, or the new offset).

        @param path: the upload's path, or its id (tus, the draft).
        @param endsAtBody: the body's end is the upload's (a plain PUT).
        @param digester: the body's own digest to check (C{Content-Digest},
            tus C{Upload-Checksum}): on a mismatch nothing of it is kept.
        @param answers: how the front end answers the end of the write.
        @param lands: false for a part of a concatenation (tus), which
            stays staged when it reaches its total.
        @param completes: L{None}: the upload completes when it reaches its
            total; else whether a body that ends completes it (the draft's
            C{Upload-Complete}; then it must end at a known total).
        @param overflow: the refusal of a body longer than the plan takes.
        """
        stored, plan, staged = began
        try:
            if isinstance(plan, AlreadyComplete):
                assert isinstance(path, UploadPath)  # only Content-Range retries
                return await self._completedAlready(request, path, plan, digests)
            assert staged is not None
            self._staging[key] = staged
            start = staged.offset
            notes = notesFor(request)
            notes.offsetBefore = notes.offsetAfter = start
            if start:
                self._emit(
                    RESUMED, request, path, start, plan.total or stored.total, staged.path
                )
            inHand = None
            if answers is PUT_ANSWERS and lands and completes is None and digester is None:
                inHand = self._takeSmallBody(request, staged, plan, stored, endsAtBody, digests)
            whole = inHand.whole() if inHand is not None else None
            if whole is not None and not self.writers.interrupted(key):
                assert isinstance(path, UploadPath)
                return await self._completeInHand(request, path, staged, stored, digests, whole)
            reprBefore = staged.hasher.copy() if digester and staged.hasher else None
            streamed = self._streamedReprHashers(staged, stored, digests)
            outcome = await self._receive(
                request, staged, plan, digester, streamed, overflow, inHand
            )
            if digester is not None and outcome is Outcome.COMPLETE:
                try:
                    digester.check()
                except UploadError as e:
                    await self.runner.run(self.store.rollback, staged, start)
                    staged.hasher = reprBefore
                    e.headers.update(offsetHeaders(start))
                    outcome, streamed = e, {}  # type: ignore[assignment]
            offset = notes.offsetAfter = staged.offset
            total = plan.total
            if total is None and endsAtBody and outcome is Outcome.COMPLETE:
                total = offset  # a chunked plain PUT ends at its last byte
            if total is None:
                total = stored.total
            if completes is None:
                finished = outcome is Outcome.COMPLETE and total is not None and offset == total
            else:
                finished = outcome is Outcome.COMPLETE and completes
                if finished and total is not None and offset != total:
                    finished, outcome = False, BadRequest(
                        "length-mismatch",
                        f"the upload ended at {offset} bytes, not at its length {total}",
                    )
            if not start and (offset or outcome is Outcome.COMPLETE) and not isinstance(
                path, UploadId
            ):
                # An upload named by an id was created (and told) before.
                self._emit(CREATED, request, path, offset, total)
            # Taken over before its completion began: the upload stays
            # staged for the newer request, and nothing lands for a client
            # that was dropped (from here to the completion, no await).
            ended = self.writers.interrupted(key)
            if lands and finished and not ended:
                return await self._complete(
                    request, path, staged, stored, digests,
                    {alg: h.digest() for alg, h in streamed.items()}, answers,
                )
            await self._timed("fsync", staged.syncAndClose)
            if total is None:
                total = staged.info.get("total")  # a query may have recorded it
            if staged.hasher is not None:
                # Only with the generation of the .json just made durable:
                # see storage.hashing.usableHashState.
                self.writers.keepHashState(key, staged.info["generation"], offset, staged.hasher)
            if outcome is Outcome.LOST or ended:
                return None
            if isinstance(outcome, UploadError):
                raise outcome
            return answers.progress(request, offset, total)
        except InsufficientStorage:
            # The disk filled under the body: the bytes written stay, and
            # with them what the headers told (the total), as for a body
            # cut short.
            if staged is not None and not staged.closed:
                await self._keepOnFullDisk(staged)
            raise
        finally:
            try:
                if staged is not None:
                    notesFor(request).offsetAfter = staged.offset
                    self._staging.pop(key, None)
                    await self._close(staged)
            finally:
                release()

    def _takeSmallBody(
        self,
        request: Any,
        staged: IStagedUpload,
        plan: Plan,
        stored: Stored,
        endsAtBody: bool,
        digests: DigestSet,
    ) -> BodyInHand | None:
        """
        Attach a L{BodyInHand} to a small body (L{SMALL_BODY}) that, once
        written whole, completes its upload with nothing more to compute
        than the running sha-256 (no overlap to drop, no C{Content-Digest},
        no other C{Repr-Digest} algorithm, no pre-finish hook); L{None}, and
        nothing attached, for any other.
        """
        length = contentLength(request)
        if (
            length is None
            or not 0 < length <= SMALL_BODY
            or plan.skip
            or (plan.take is not None and plan.take != length)
            or length > self.config.maxUploadSize - plan.offset
            or staged.hasher is None
            or self._streamedReprHashers(staged, stored, digests)
            or self._asks(PRE_FINISH)
        ):
            return None
        total = plan.total
        if total is None:
            total = staged.offset + length if endsAtBody else stored.total
        if total != staged.offset + length:
            return None
        inHand = BodyInHand(length)
        deliverBody(request, inHand)
        return inHand

    async def _completeInHand(
        self,
        request: Any,
        path: UploadPath,
        staged: IStagedUpload,
        stored: Stored,
        digests: DigestSet,
        body: list[bytes],
    ) -> bytes:
        """
        Write, hash and complete a whole small body in one trip to the disk
        pool (L{_writeAndComplete}), telling and answering as the streamed
        path does (L{_write}, L{_complete}).
        """
        start = staged.offset
        total = start + sum(map(len, body))
        key = self.store.keyFor(path)
        self.writers.forgetHashState(key)
        wanted: dict[str, bytes] = dict(digests.values)
        for alg, recorded in stored.digests.items():
            wanted.setdefault(alg, base64.b64decode(recorded))
        try:
            with self._completion(key):
                replaced = await self._timed(
                    "completion", self._writeAndComplete, path, staged, body, wanted
                )
        finally:
            notesFor(request).offsetAfter = staged.offset
            if not start and staged.offset:
                self._emit(CREATED, request, path, staged.offset, total)
        self._emit(
            COMPLETED, request, path, staged.offset, staged.offset, path, _metadataOf(staged)
        )
        return PUT_ANSWERS.completed(
            request, path, staged.offset, staged.digests["sha-256"], 200 if replaced else 201
        )

    def _writeAndComplete(
        self, path: UploadPath, staged: IStagedUpload, body: list[bytes], wanted: dict[str, bytes]
    ) -> bool:
        """
        Blocking: append C{body}, feed it to the running sha-256, and
        complete the upload (L{IUploadStore.complete}, which checks
        C{wanted} first). A failed write leaves the bytes written before.

        C{body} is emptied once written and hashed, so its bytes are freed
        here and then, not when the completion is answered: kept that long,
        S4's peak RSS rose from 67 to 93 MiB (64 uploads in flight).
        """
        try:
            staged.writeChunks(body)
        except OSError as e:
            if isNoSpace(e):
                raise InsufficientStorage("no-space", "the disk is full") from e
            raise
        staged.hashChunks(body)
        body.clear()
        return self.store.complete(path, staged, self.config.allowOverwrite, wanted, {})

    async def _keepOnFullDisk(self, staged: IStagedUpload) -> None:
        """
        Make what a write cut by a full disk staged durable, metadata
        included, if the disk still takes it (its C{.json} is small).
        """
        try:
            await self._timed("fsync", staged.syncAndClose)
        except Exception as e:
            log.warn(
                "{path}: the disk is full; what its headers told is not recorded: {error}",
                path=staged.path.relative, error=e,
            )

    async def _close(self, staged: IStagedUpload) -> None:
        """
        Close a staged file still open after an error: in the disk pool,
        since closing a file on NFS flushes it and may block.
        """
        if not staged.closed:
            await self.runner.run(staged.close)

    def _streamedReprHashers(
        self, staged: IStagedUpload, stored: Stored, digests: DigestSet
    ) -> dict[str, Hasher]:
        """
        Hashers for the C{Repr-Digest} algorithms other than sha-256 (which
        the store keeps running across requests) that this request can
        compute while streaming: only when it writes the upload from its
        first byte. Otherwise completion re-reads the staged file for them.
        """
        if staged.offset != 0:
            return {}
        algs = {alg for alg, _ in digests.values} | set(stored.digests)
        return {alg: newHasher(alg) for alg in algs - {"sha-256"}}

    async def _receive(
        self,
        request: Any,
        staged: IStagedUpload,
        plan: Plan,
        digester: ContentDigester | None = None,
        streamed: dict[str, Hasher] | None = None,
        tooLong: Callable[[], UploadError] | None = None,
        inHand: BodyInHand | None = None,
    ) -> Outcome | UploadError:
        """
        Stream the body into C{staged}; return how the body ended, or the
        limit it broke.

        @param inHand: the receiver already attached to the body, which
            hands what it kept (and the rest) over to this one.

        @param digester: the request's C{Content-Digest}, fed the whole body.
        @param streamed: more hashers fed the bytes written (see
            L{_streamedReprHashers}).
        """
        limit = plan.take
        overflow: Callable[[], UploadError]
        if limit is None:
            limit = self.config.maxUploadSize - plan.offset
            overflow = lambda: TooLarge(  # noqa: E731
                "too-large", f"uploads are limited to {self.config.maxUploadSize} bytes"
            )
        else:
            overflow = tooLong or (lambda: BadRequest(  # noqa: E731
                "body-too-long", "the body is longer than its Content-Range"
            ))

        hashLane = _hashLane(
            staged.hashChunks if staged.hasher is not None else None,
            digester.hashChunks if digester is not None else None,
            _feeder(list(streamed.values())) if streamed else None,
        )

        if hashLane is not None and _small(request):
            hashNow, hashLane = hashLane, None
        else:
            hashNow = None

        def makeSink(producer: Any) -> FileSink:
            if hashNow is not None:
                return _HashingSink(
                    self.runner, staged.writeChunks, producer,
                    self.config.highWater, self.config.lowWater, hashNow=hashNow,
                )
            return FileSink(
                self.runner, staged.writeChunks, producer,
                self.config.highWater, self.config.lowWater, hashLane,
                # (a file bytes can be spliced into: the zero-copy path)
                spliceTarget=staged if hasattr(staged, "spliceIn") else None,  # type: ignore[arg-type]
            )

        receiver = UploadReceiver(makeSink, plan.skip, limit, overflow)
        bodyReceiver = digester.receiving(receiver, plan.skip) if digester is not None else receiver
        if inHand is not None:
            inHand.handOver(bodyReceiver)
        else:
            deliverBody(request, bodyReceiver)
        outcome: Outcome | UploadError = Outcome.LOST
        failed: Exception | None = None
        try:
            outcome = await receiver.ended
        except UploadError as e:
            outcome = e  # a limit broken: the bytes before it are kept
        except Exception as e:
            failed = e  # a write failed (the sink's drain raises it too)
        sink = receiver.sink
        assert sink is not None
        try:
            await sink.drain()
            if failed is not None:
                raise failed
        except Exception as e:
            if isNoSpace(e):
                raise InsufficientStorage("no-space", "the disk is full") from e
            raise
        return outcome

    async def _complete(
        self, request: Any, path: Target, staged: IStagedUpload, stored: Stored,
        digests: DigestSet, streamed: dict[str, bytes] | None = None,
        answers: Answers = PUT_ANSWERS,
    ) -> bytes:
        """
        L{_completeNow} within L{_completion}.
        """
        with self._completion(self.store.keyFor(path)):
            return await self._completeNow(
                request, path, staged, stored, digests, streamed, answers
            )

    async def _completeNow(
        self, request: Any, path: Target, staged: IStagedUpload, stored: Stored,
        digests: DigestSet, streamed: dict[str, bytes] | None = None,
        answers: Answers = PUT_ANSWERS,
    ) -> bytes:
        """
        Move the upload into place once the store checked the whole file's
        digests (the request's C{Repr-Digest}, then those recorded): a
        mismatch is 400 C{digest-mismatch} and the upload is discarded.

        @param streamed: digests already computed while streaming; the store
            reads the staged file for the rest.
        """
        self.writers.forgetHashState(self.store.keyFor(path))
        wanted: dict[str, bytes] = dict(digests.values)
        for alg, recorded in stored.digests.items():
            wanted.setdefault(alg, base64.b64decode(recorded))
        destination = staged.path if isinstance(path, UploadId) else path
        assert destination is not None
        if self._asks(PRE_FINISH):
            # The digests are checked before the hook is asked, the rename after.
            try:
                staged.digests = await self.runner.run(
                    verifyStaged, staged, wanted, self.store.hashStaged, streamed
                )
            except BadRequest:
                await self.runner.run(self.store.discard, staged)
                raise
            upload = HookUpload(
                destination.relative, self.store.keyFor(path),
                uploadId=path.value if isinstance(path, UploadId) else None,
                protocol=notesFor(request).protocol, offset=staged.offset, total=staged.offset,
                metadata=_metadataOf(staged).get("metadata", {}),
            )
            await self.checkBeforeFinish(request, upload, staged)
            checked: dict[str, bytes] | None = None
        else:
            checked = wanted
        replaced = await self._timed(
            "completion", self.store.complete, path, staged, self.config.allowOverwrite,
            checked, streamed,
        )
        notesFor(request).offsetAfter = staged.offset
        self._emit(
            COMPLETED, request, path, staged.offset, staged.offset, destination,
            _metadataOf(staged),
        )
        return answers.completed(
            request, destination, staged.offset, staged.digests["sha-256"],
            200 if replaced else 201,
        )

    async def _completedAlready(
        self, request: Any, path: UploadPath, plan: AlreadyComplete, digests: DigestSet
    ) -> bytes:
        algs = {"sha-256"} | {alg for alg, _ in digests.values}
        computed = await self.runner.run(self.store.hashComplete, path, algs)
        for alg, value in digests.values:
            if computed[alg] != value:
                raise Conflict("digest-mismatch", f"the stored file's {alg} digest differs")
        return completed(request, path, plan.size, computed["sha-256"], 200)


class _HashingSink(FileSink):
    """
    A L{FileSink} whose digests are computed on the reactor thread as each
    chunk is accepted, in order, rather than on a lane of the disk pool
    (for small bodies: see L{SMALL_BODY}). Only the writes go to the pool.
    """

    def __init__(
        self, *args: Any, hashNow: Callable[[Sequence[bytes | memoryview]], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._hashNow = hashNow

    def write(self, data: bytes | memoryview) -> None:
        if self.failure is None and data:
            self._hashNow((data,))
        super().write(data)


def _small(request: Any) -> bool:
    """
    Whether C{request}'s body is declared small enough to hash on the
    reactor thread (L{SMALL_BODY}).
    """
    length = contentLength(request)
    return length is not None and length <= SMALL_BODY


def _metadataOf(staged: IStagedUpload) -> dict[str, Any]:
    """
    An event's detail for the upload being completed: the metadata its
    front end recorded at creation (tus C{Upload-Metadata}), for hooks.
    """
    attributes = (staged.info or {}).get("attributes") or {}
    if "tus-metadata" not in attributes:
        return {}
    from uploadsvc.web.tus import hookMetadata

    return {"metadata": hookMetadata(attributes["tus-metadata"])}


def _loggable(uri: bytes) -> str:
    """
    A request's path for the log: without its query (which may carry a
    signature or a token).
    """
    return uri.split(b"?", 1)[0].decode("latin-1")


class _Creating(Exception):
    """
    The request would start a new upload, and the pre-create hook has not
    been asked yet.
    """


def _guardCreation(state: Plan | AlreadyComplete) -> None:
    """
    Stop a request whose plan starts a new upload (a first write, a plain
    PUT starting over, a replacement) before anything is staged, so that
    the pre-create hook is asked first (see L{UploadApp._put}).
    """
    if isinstance(state, Plan) and state.startOver:
        raise _Creating()


class _StateChanged(Exception):
    """
    The upload changed between a status query and its completion.
    """

    def __init__(self, stored: Stored) -> None:
        super().__init__(stored)
        self.stored = stored


def _attempt(f: Callable[..., Any], *args: Any) -> tuple[Any, UploadError | None]:
    """
    C{f(*args)}, or the refusal it raised (kept to be ranked with the others).
    """
    try:
        return f(*args), None
    except UploadError as e:
        return None, e


def _readRange(
    headers: Any, length: int | None
) -> tuple[ContentRange | RangeQuery | None, UploadError | None]:
    """
    The request's C{Content-Range}, and its refusal if any: what was parsed
    before the refusal still counts (its size for 413; a query stays one).
    """
    rng: ContentRange | RangeQuery | None = None
    rangeValue = headers.getRawHeaders(b"Content-Range")
    try:
        if rangeValue and len(rangeValue) > 1:
            raise BadRequest("content-range", "the request has more than one Content-Range")
        if rangeValue:
            rng = parseContentRange(rangeValue[0])
            if isinstance(rng, ContentRange):
                checkRangeLength(rng, length)
            elif length or (length is None and headers.hasHeader(b"Transfer-Encoding")):
                # A chunked body may turn out empty, but only after the
                # answer: refused from the headers like any other body.
                raise BadRequest("query-with-body", "a bytes */T query carries no body")
    except UploadError as e:
        return rng, e
    return rng, None


def _digestFields(request: Any) -> tuple[DigestSet, DigestSet]:
    """
    The request's C{Repr-Digest} and C{Content-Digest}.
    """
    return digestHeader(request, b"Repr-Digest"), digestHeader(request, b"Content-Digest")


def _clientGone(request: Any) -> Callable[[], bool]:
    """
    Whether the client of C{request} has gone away (its connection lost
    before the answer), as a function to ask later.
    """
    lost: list[bool] = []
    request.notifyFinish().addErrback(lambda _: lost.append(True))
    return lambda: bool(lost)


def _known(writerTotal: int | None, stored: Stored) -> Stored:
    """
    Add to C{stored} the total that a writer of this process knows but may
    not have written down yet (L{UploadApp._writerTotal}).
    """
    if writerTotal is None or not stored.incomplete or stored.total is not None:
        return stored
    return attrs.evolve(stored, total=writerTotal)


def _hashLane(
    *feeders: Callable[[Sequence[bytes | memoryview]], None] | None,
) -> Callable[[Sequence[bytes | memoryview]], None] | None:
    """
    One digest lane for the sink that feeds every given hasher in turn
    (L{None} when there is none).
    """
    active = [f for f in feeders if f is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    def feedAll(chunks: Sequence[bytes | memoryview]) -> None:
        for feed in active:
            feed(chunks)

    return feedAll


def _feeder(hashers: list[Hasher]) -> Callable[[Sequence[bytes | memoryview]], None]:
    def feed(chunks: Sequence[bytes | memoryview]) -> None:
        for hasher in hashers:
            for chunk in chunks:
                hasher.update(chunk)  # type: ignore[arg-type]

    return feed
