"""
The upload HTTP interface (docs/protocol.md) as a Klein app.

The handlers run when a request's headers are complete (see
L{uploadsvc.web.streaming}): they refuse from the headers, or accept and stream
the body into the store through L{deliverBody}. Errors become responses in
one place, L{UploadApp.uploadError}.
"""

from __future__ import annotations

import base64
from functools import partial
from typing import Any, Callable, Sequence

import attrs
from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
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
from uploadsvc.protocol.paths import UploadPath, parseUploadPath
from uploadsvc.protocol.ranges import (
    ContentRange,
    RangeQuery,
    checkRangeLength,
    parseContentRange,
)
from uploadsvc.sink import HIGH_WATER, LOW_WATER, FileSink, IDiskRunner
from uploadsvc.storage.filestore import FileStore, StagedFile, isNoSpace
from uploadsvc.storage.writers import WriterRegistry
from uploadsvc.web.answers import completed, progress, refuse, status
from uploadsvc.web.auth import Authenticator
from uploadsvc.web.contentdigest import ContentDigester
from uploadsvc.web.receiver import COMPLETE, LOST, UploadReceiver
from uploadsvc.web.requestheaders import contentLength, declaredEnd, digestHeader, digestsB64
from uploadsvc.web.streaming import abortRequest, deliverBody

log = Logger()

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
    """

    allowOverwrite: bool = False
    allowDelete: bool = False
    maxUploadSize: int = DEFAULT_MAX_UPLOAD
    prefix: bytes = b""
    minFreeBytes: int = 0
    maxUploads: int = 0
    highWater: int = HIGH_WATER
    lowWater: int = LOW_WATER


def _shield(d: Deferred) -> Deferred:
    """
    Klein cancels a handler's Deferred when the client goes away; the storage
    work behind it (fsync, release) must run to its end anyway.
    """
    out: Deferred = Deferred(lambda _: None)

    def forward(result: object) -> None:
        if not out.called:
            out.callback(result)  # a Failure errbacks

    d.addBoth(forward)
    return out


class _RawPathRoot(Resource):
    """
    Hands the Klein app every path, leaving path rules to the handlers.

    twisted.web splits and percent-decodes the path for routing (turning
    C{%2F} into a slash) and Klein refuses non-UTF-8 paths with its own
    answer; uploadsvc parses the raw path itself, so Klein only sees a
    neutral path. Reserved dot-endpoints (tus) will be routed here.

    Klein also decodes the C{Host} header as UTF-8, and answers one that is
    not with a 400 of its own after logging an error: a client could fill
    the log at will. Such a request is refused here instead, like any other.
    """

    isLeaf = True

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request: Any) -> Any:
        try:
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return refuse(request, BadRequest("bad-host", "the Host header is not UTF-8"))
        request.postpath = [b""]
        return self._inner.render(request)


class UploadApp:
    """
    The HTTP interface of one store.
    """

    app = Klein()

    def __init__(
        self,
        store: FileStore,
        runner: IDiskRunner,
        config: Config = Config(),
        writers: WriterRegistry | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """
        @param auth: who may send requests; L{None} lets everyone (a front
            end authenticates, or the server is local).
        """
        self.store = store
        self.runner = runner
        self.config = config
        self.writers = writers if writers is not None else WriterRegistry()
        self._staging: dict[str, StagedFile] = {}
        #: The code of the storage fault that the last look for takeovers
        #: met (logged once), or L{None}.
        self._lookFailing: str | None = None
        #: Totals told by the headers of requests that hold an upload here
        #: but whose staged file is not open yet (see L{_writerTotal}).
        self._announced: dict[str, int] = {}
        self.auth = auth

    def resource(self) -> Resource:
        return _RawPathRoot(self.app.resource())

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
                if not self.store.holdsCurrentLock(staged)
            ]
            if stale:
                log.error(
                    "the lock file under {root}/.uploadsvc was removed or replaced while "
                    "{count} uploads were being written: ending them (their bytes are "
                    "kept) so that every process locks the same file again",
                    root=self.store.root, count=len(stale),
                )
            # Only requests that hold the store's lock: a request of ours
            # that is itself waiting for another process made that marker.
            for key in [*keys, *stale]:
                if key in self._staging:
                    self.writers.interrupt(key)

        d = self.runner.run(self.store.pendingTakeovers).addCallback(interrupt)
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
        but not moved into place (L{FileStore.recover}), and log each.
        """

        def report(done: list[tuple[str, str]]) -> None:
            for relative, what in done:
                log.info("staged upload {path}: {what}", path=relative, what=what)

        d = self.runner.run(self.store.recover, self.config.allowOverwrite)
        return d.addCallback(report).addErrback(
            lambda f: log.failure("recovering staged uploads", f)
        )

    # --- routing --------------------------------------------------------

    # Every method reaches dispatch (Klein's own refusal of a method would be
    # a 500 here, and would come before the credentials check).
    @app.route("/", branch=True)
    def dispatch(self, request: Any) -> Deferred | bytes:
        # docs/protocol.md's order: credentials before the path.
        if self.auth is not None:
            self.auth.check(request)
        path = self._path(request)
        method = request.method
        handler: Callable[[Any, UploadPath], Any]
        if method in (b"PUT", b"POST"):
            handler = self._put
        elif method == b"HEAD":
            handler = self._head
        elif method == b"DELETE":
            handler = self._delete
        else:
            raise MethodNotAllowed(
                "method", "use PUT, POST, HEAD or DELETE",
                {b"Allow": b"PUT, POST, HEAD, DELETE"},
            )
        return _shield(Deferred.fromCoroutine(handler(request, path)))

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

    # --- status ---------------------------------------------------------

    async def _head(self, request: Any, path: UploadPath) -> bytes:
        key = self.store.keyFor(path)
        before = self._writerTotal(key)
        # strict: a link (or FIFO) at the path is no complete upload (409).
        stored = await self.runner.run(self.store.inspect, path, True, True)
        # A writer may have made the data file while the disk was read.
        total = before if before is not None else self._writerTotal(key)
        return status(request, checkQuery(_known(total, stored), None), forPut=False)

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

    async def _delete(self, request: Any, path: UploadPath) -> bytes:
        # The path rules first (403 through a link, 409 under a file), before
        # a writer of the upload is asked to let go for a refused request.
        await self.runner.run(self.store.inspect, path, False)
        release = await self._acquire(request, path)
        try:
            if await self.runner.run(self.store.cancel, path):
                self.writers.hashStates.pop(self.store.keyFor(path), None)
                request.setResponseCode(204)
                return b""
            stored = await self.runner.run(self.store.inspect, path, True, True)
            if stored.completeSize is None:
                raise NotFound("not-found", "no upload at this path")
            if not self.config.allowDelete:
                raise MethodNotAllowed(
                    "delete-disabled", "deleting complete files is disabled",
                    {b"Allow": b"PUT, POST, HEAD"},
                )
            await self.runner.run(self.store.deleteComplete, path)
            request.setResponseCode(204)
            return b""
        finally:
            release()

    # --- write ----------------------------------------------------------

    def _acquire(self, request: Any, path: UploadPath) -> Deferred:
        return self.writers.acquire(
            self.store.keyFor(path), lambda: abortRequest(request)
        )

    async def _put(self, request: Any, path: UploadPath) -> bytes | None:
        headers = request.requestHeaders
        length = contentLength(request)
        rangeError: UploadError | None = None
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
            rangeError = e
        malformed: UploadError | None = None
        try:
            digests = digestHeader(request, b"Repr-Digest")
            contentDigests = digestHeader(request, b"Content-Digest")
        except UploadError as e:
            malformed = e
            digests = contentDigests = DigestSet()

        # Refusals in docs/protocol.md's order: path, size, space, busy, range, state.
        query = isinstance(rng, RangeQuery)
        end = declaredEnd(rng, length)
        if end is not None and end > self.config.maxUploadSize:
            raise TooLarge(
                "too-large", f"uploads are limited to {self.config.maxUploadSize} bytes"
            )
        key = self.store.keyFor(path)
        decide = partial(
            planWrite,
            contentRange=rng if isinstance(rng, ContentRange) else None,
            contentLength=length,
            allowOverwrite=self.config.allowOverwrite,
        )
        busy = bool(self.config.maxUploads and self.writers.busy() >= self.config.maxUploads)
        if busy:
            decide = partial(_unlessBusy, decide)
        if not query and not self.writers.isHeld(key):
            # The common case, nobody here writes this upload: take it now and
            # check, lock and open in one trip to the disk pool.
            release = self._announce(key, rng, length, await self._acquire(request, path))
            try:
                began = await self.runner.run(
                    self._checkAndBegin, path, end, busy, rangeError or malformed,
                    decide, digestsB64(digests), self.writers.hashStates.pop(key, None),
                )
            except BaseException:
                release()
                raise
            return await self._write(request, path, key, rng, digests, contentDigests, release, began)
        writerTotal = self._writerTotal(key)
        stored, stateError, free = await self.runner.run(self._precheck, path, False)
        # A body of unknown length must at least find the floor free.
        if not query and free - (end or 0) < self.config.minFreeBytes:
            raise InsufficientStorage("no-space", "not enough free disk space")
        if isinstance(rng, RangeQuery) and rangeError is None:
            if malformed is not None:
                raise malformed
            if stateError is not None:
                raise stateError
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
        if busy and (rangeError or malformed):
            raise _busy()
        if rangeError is not None:
            raise rangeError
        if malformed is not None:
            raise malformed
        release = self._announce(key, rng, length, await self._acquire(request, path))
        try:
            began = await self.runner.run(
                self.store.begin, path, decide, digestsB64(digests),
                self.writers.hashStates.pop(key, None),
            )
        except BaseException:
            release()
            raise
        return await self._write(request, path, key, rng, digests, contentDigests, release, began)

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
                self.store.begin, path, decide, {}, self.writers.hashStates.pop(key, None),
                False,
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
        path: UploadPath,
        end: int | None,
        busy: bool,
        headerError: UploadError | None,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: Any,
    ) -> tuple[Stored, Plan | AlreadyComplete, StagedFile | None]:
        """
        Blocking: the refusals that need the disk, in docs/protocol.md's order
        (403 path, 507 space, then 503 and the header errors found earlier),
        and then L{FileStore.begin} (whose decision gives the 409s, or 503
        through L{_unlessBusy}).
        """
        _, _, free = self._precheck(path, False)
        if free - (end or 0) < self.config.minFreeBytes:
            raise InsufficientStorage("no-space", "not enough free disk space")
        if busy and headerError is not None:
            raise _busy()
        if headerError is not None:
            raise headerError
        return self.store.begin(path, decide, digests, hashState)

    async def _write(
        self,
        request: Any,
        path: UploadPath,
        key: str,
        rng: ContentRange | RangeQuery | None,
        digests: DigestSet,
        contentDigests: DigestSet,
        release: Callable[[], None],
        began: tuple[Stored, Plan | AlreadyComplete, StagedFile | None],
    ) -> bytes | None:
        """
        Stream the body of an accepted write into the staged upload and
        answer (completion, or the new offset).
        """
        stored, plan, staged = began
        try:
            if isinstance(plan, AlreadyComplete):
                return await self._completedAlready(request, path, plan, digests)
            assert staged is not None
            self._staging[key] = staged
            start = staged.offset
            digester = ContentDigester(contentDigests) if contentDigests else None
            reprBefore = staged.hasher.copy() if digester and staged.hasher else None
            streamed = self._streamedReprHashers(staged, stored, digests)
            outcome = await self._receive(request, staged, plan, digester, streamed)
            if digester is not None and outcome == COMPLETE:
                try:
                    digester.check()
                except UploadError as e:
                    await self.runner.run(self.store.rollback, staged, start)
                    staged.hasher = reprBefore
                    e.headers.update(offsetHeaders(start))
                    outcome, streamed = e, {}
            offset = staged.offset
            total = plan.total
            if total is None and rng is None and outcome == COMPLETE:
                total = offset  # a chunked plain PUT ends at its last byte
            if total is None:
                total = stored.total
            if outcome == COMPLETE and total is not None and offset == total:
                return await self._complete(
                    request, path, staged, stored, digests,
                    {alg: h.digest() for alg, h in streamed.items()},
                )
            await self.runner.run(staged.syncAndClose)
            if total is None:
                total = staged.info.get("total")  # a query may have recorded it
            if staged.hasher is not None:
                # Only with the generation of the .json just made durable:
                # see filestore._usableHashState.
                self.writers.hashStates[key] = (
                    staged.info["generation"], offset, staged.hasher
                )
            if outcome == LOST:
                return None
            if isinstance(outcome, UploadError):
                raise outcome
            return progress(request, offset, total)
        finally:
            try:
                if staged is not None:
                    self._staging.pop(key, None)
                    await self._close(staged)
            finally:
                release()

    async def _close(self, staged: StagedFile) -> None:
        """
        Close a staged file still open after an error: in the disk pool,
        since closing a file on NFS flushes it and may block.
        """
        if not staged.closed:
            await self.runner.run(staged.close)

    def _streamedReprHashers(
        self, staged: StagedFile, stored: Stored, digests: DigestSet
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

    def _precheck(
        self, path: UploadPath, durable: bool
    ) -> tuple[Stored, UploadError | None, int]:
        """
        Blocking: what is stored, a state refusal kept for later (docs/protocol.md
        puts 409 last), and the free space. A path through a link (403)
        raises at once.
        """
        stateError = None
        stored = Stored()
        try:
            stored = self.store.inspect(path, durable, True)
        except Forbidden:
            raise
        except UploadError as e:
            stateError = e
        return stored, stateError, self.store.freeBytes()

    async def _receive(
        self,
        request: Any,
        staged: StagedFile,
        plan: Plan,
        digester: ContentDigester | None = None,
        streamed: dict[str, Hasher] | None = None,
    ) -> object:
        """
        Stream the body into C{staged}; return how the body ended.

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
            overflow = lambda: BadRequest(  # noqa: E731
                "body-too-long", "the body is longer than its Content-Range"
            )

        hashLane = _hashLane(
            staged.hashChunks if staged.hasher is not None else None,
            digester.hashChunks if digester is not None else None,
            _feeder(list(streamed.values())) if streamed else None,
        )

        def makeSink(producer: Any) -> FileSink:
            return FileSink(
                self.runner, staged.writeChunks, producer,
                self.config.highWater, self.config.lowWater, hashLane,
            )

        receiver = UploadReceiver(makeSink, plan.skip, limit, overflow)
        deliverBody(
            request,
            digester.receiving(receiver, plan.skip) if digester is not None else receiver,
        )
        outcome = await receiver.ended
        sink = receiver.sink
        assert sink is not None
        try:
            await sink.drain()
        except Exception as e:
            if isNoSpace(e):
                raise InsufficientStorage("no-space", "the disk is full") from e
            raise
        return outcome

    async def _complete(
        self, request: Any, path: UploadPath, staged: StagedFile, stored: Stored,
        digests: DigestSet, streamed: dict[str, bytes] | None = None,
    ) -> bytes:
        """
        Check the whole file's digests and move it into place.

        @param streamed: digests already computed while streaming; the rest
            are computed from the staged file.
        """
        key = self.store.keyFor(path)
        self.writers.hashStates.pop(key, None)
        wanted: dict[str, bytes] = dict(digests.values)
        for alg, recorded in stored.digests.items():
            wanted.setdefault(alg, base64.b64decode(recorded))
        algs = set(wanted) | {"sha-256"}
        computed: dict[str, bytes] = dict(streamed or {})
        if staged.hasher is not None:
            computed["sha-256"] = staged.hasher.digest()
        missing = algs - set(computed)
        if missing:
            computed.update(await self.runner.run(self.store.hashStaged, staged, missing))
        for alg, value in wanted.items():
            if computed[alg] != value:
                await self.runner.run(self.store.discard, staged)
                raise BadRequest("digest-mismatch", f"the file's {alg} digest does not match Repr-Digest")
        replaced = await self.runner.run(
            self.store.complete, path, staged, self.config.allowOverwrite
        )
        return completed(request, path, staged.offset, computed["sha-256"], 200 if replaced else 201)

    async def _completedAlready(
        self, request: Any, path: UploadPath, plan: AlreadyComplete, digests: DigestSet
    ) -> bytes:
        algs = {"sha-256"} | {alg for alg, _ in digests.values}
        computed = await self.runner.run(self.store.hashComplete, path, algs)
        for alg, value in digests.values:
            if computed[alg] != value:
                raise Conflict("digest-mismatch", f"the stored file's {alg} digest differs")
        return completed(request, path, plan.size, computed["sha-256"], 200)


def _loggable(uri: bytes) -> str:
    """
    A request's path for the log: without its query (which may carry a
    signature or a token).
    """
    return uri.split(b"?", 1)[0].decode("latin-1")


class _StateChanged(Exception):
    """
    The upload changed between a status query and its completion.
    """

    def __init__(self, stored: Stored) -> None:
        super().__init__(stored)
        self.stored = stored


def _busy() -> Busy:
    return Busy("busy", "too many uploads in progress")


def _unlessBusy(
    decide: Callable[[Stored], Plan | AlreadyComplete], stored: Stored
) -> Plan | AlreadyComplete:
    """
    The decision of a request that arrives while too many uploads are being
    written: 503, unless it is a retried final request (the file is complete
    already, nothing to write), which is answered as usual. 503 comes before
    the decision's own 400s and 409s (docs/protocol.md section 6).
    """
    try:
        plan = decide(stored)
    except UploadError:
        raise _busy() from None
    if isinstance(plan, AlreadyComplete):
        return plan
    raise _busy()


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
