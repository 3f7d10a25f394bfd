"""
The tus 1.0 front end at C{<prefix>/.tus/} (docs/protocol-tus.md, section 8
of the protocol): creation (with an upload, with a deferred length),
offsets, PATCH, termination, checksums, expiration and concatenation.

The decisions are L{uploadsvc.protocol.tus}'s; the writing is the app's own
machinery for path uploads (the writer registry, the lock wait across
processes, the streamed body with flow control, atomic durable completion),
reached with an upload id instead of a path; only the answers are tus's.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import attrs

from twisted.internet.defer import CancelledError

from uploadsvc.errors import (
    BadRequest, Busy, ChecksumMismatch, Conflict, Forbidden, MethodNotAllowed, NotFound, TooLarge,
    UploadError,
)
from uploadsvc.ops.events import CANCELLED, CREATED
from uploadsvc.ops.hooks import PRE_CREATE, HookUpload
from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.protocol.creator import TUS, checkCreator, createdBy
from uploadsvc.protocol.digests import DigestSet
from uploadsvc.protocol.expiry import expiresAt, httpDate
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.protocol.scopes import UPLOAD, checkCreation, checkScope, checkUpload, outOfScope
from uploadsvc.protocol.tus import (
    FOREIGN_HEADERS, Creation, PatchHeaders, allowedMethods, concatHeader, decideCreation,
    declaredEnd, isFinal, methodOf, optionsHeaders, parseTarget, planPatch, readPatch,
    retriesCompleted,
)
from uploadsvc.protocol.tusheaders import (
    VERSION, Final, Partial, checkContentType, checkResumable, headerValue, metadataDestination,
    newChecksumHasher, parseChecksum, parseConcat, parseMetadata,
)
from uploadsvc.storage.interfaces import (
    INCOMING, Incomplete, UploadId, newUploadId, parseUploadId,
)
from uploadsvc.web.access import accessOf
from uploadsvc.web.answers import Answers
from uploadsvc.web.contentdigest import ContentDigester
from uploadsvc.web.forwarded import absoluteURL, publicBase
from uploadsvc.web.requestheaders import contentLength

if TYPE_CHECKING:
    from uploadsvc.web.app import UploadApp

#: Attribute names the store keeps for a tus upload.
METADATA, CONCAT, DEFERRED = "tus-metadata", "tus-concat", "tus-defer-length"

#: Completed uploads remembered per process, so that a client whose last
#: answer was lost learns from HEAD that it is done (rather than 404, which
#: makes stock clients upload again).
MAX_DONE = 10_000

#: And at most this many bytes of their attributes (a client chooses its
#: C{Upload-Metadata}, up to the header block's limit per upload).
MAX_DONE_BYTES = 8 * 1024 * 1024


@attrs.frozen
class _Done:
    size: int
    #: What it was created with (its metadata and concatenation, which
    #: HEAD still tells; a final upload is never patched).
    attributes: dict[str, str]
    #: Its destination, which the scope of a later request is checked on.
    path: UploadPath


def hookMetadata(raw: str | None) -> dict[str, str]:
    """
    A tus upload's C{Upload-Metadata} (as stored) for a hook's
    C{upload.metadata}: keys to their decoded values as text (a key sent
    alone: C{""}; bytes that are not UTF-8 replaced).
    """
    if not raw:
        return {}
    try:
        metadata = parseMetadata(raw.encode("ascii"))
    except (UploadError, UnicodeEncodeError):
        return {}
    return {
        key: "" if value is None else value.decode("utf-8", "replace")
        for key, value in metadata.pairs
    }


class TusFrontEnd:
    """
    tus requests of one L{UploadApp}.

    @ivar maxDoneBytes: the most bytes of attributes of completed uploads
        remembered (L{MAX_DONE_BYTES}).
    """

    def __init__(self, app: UploadApp) -> None:
        self.app = app
        self._done: OrderedDict[str, _Done] = OrderedDict()
        self._doneBytes = 0
        self.maxDoneBytes = MAX_DONE_BYTES

    # --- routing ---------------------------------------------------------

    async def handle(self, request: Any, rest: bytes) -> bytes | None:
        """
        Answer a request for C{<prefix>/.tus<rest>}: tus's headers only, also
        on a refusal that the app's write path (shared with path uploads and
        the draft) made.
        """
        try:
            return await self._handle(request, rest)
        except UploadError as e:
            for name in FOREIGN_HEADERS:
                e.headers.pop(name, None)
            raise

    async def _handle(self, request: Any, rest: bytes) -> bytes | None:
        request.setHeader(b"Tus-Resumable", VERSION)
        notesFor(request).protocol = "tus"
        method = methodOf(request.method, headerValue(request.requestHeaders, b"X-HTTP-Method-Override"))
        target = parseTarget(rest)
        if method == b"OPTIONS":
            return self._options(request)
        allowed = allowedMethods(target is None)
        if method not in allowed:
            raise MethodNotAllowed(
                "method", "use " + ", ".join(m.decode() for m in allowed),
                {b"Allow": b", ".join(allowed)},
            )
        if target is None:
            return await self._create(request)
        uploadId = parseUploadId(target)
        notesFor(request).uploadId = uploadId.value
        if method == b"HEAD":
            return await self._head(request, uploadId)
        if method == b"DELETE":
            return await self._delete(request, uploadId)
        patch = readPatch(request.requestHeaders)
        return await self._append(
            request, uploadId, patch, contentLength(request), self._patchAnswers
        )

    def _options(self, request: Any) -> bytes:
        request.setResponseCode(204)
        for name, value in optionsHeaders(self.app.config.maxUploadSize).items():
            request.setHeader(name, value)
        return b""

    # --- creation --------------------------------------------------------

    async def _create(self, request: Any) -> bytes | None:
        config = self.app.config
        public = publicBase(request).prefix
        creation = decideCreation(
            request.requestHeaders, config.prefix, config.maxUploadSize,
            None if public is None else public.encode("ascii"),
        )
        if isinstance(creation.concat, Partial):
            # A part lands nowhere, but its metadata names where its final
            # upload will: what a credential's folder is checked against.
            creation = attrs.evolve(
                creation, destination=metadataDestination(creation.metadata, config.prefix)
            )
        access = accessOf(request)
        checkCreation(access, creation.destination)
        length = contentLength(request)
        hasBody = bool(length) or (
            length is None and request.requestHeaders.hasHeader(b"Transfer-Encoding")
        )
        checksum = None
        if hasBody:
            if isinstance(creation.concat, Final):
                raise BadRequest("body-with-final", "a final concatenation carries no body")
            checkContentType(headerValue(request.requestHeaders, b"Content-Type"))
            checksum = parseChecksum(headerValue(request.requestHeaders, b"Upload-Checksum"))
            if length is not None and creation.total is not None and length > creation.total:
                raise TooLarge("exceeds-length", "the body is longer than Upload-Length")
            # Size, space and load, before anything is created.
            self.app._headerFacts(b"PUT", length if length is not None else creation.total)
        parts: list[UploadId] = []
        total = creation.total
        if isinstance(creation.concat, Final):
            parts = [UploadId(part) for part in creation.concat.parts]
            total = await self._partsTotal(request, parts)
        uploadId = newUploadId()
        if creation.destination is not None and not isinstance(creation.concat, Partial):
            await self._checkDestination(creation.destination)
        creation = await self.beforeCreate(request, creation, uploadId)
        attributes = createdBy(TUS)
        if creation.metadata.raw:
            attributes[METADATA] = creation.metadata.raw.decode("ascii")
        if isinstance(creation.concat, Partial):
            attributes[CONCAT] = "partial"
        elif isinstance(creation.concat, Final):
            attributes[CONCAT] = concatHeader(creation.concat.parts, config.prefix).decode("ascii")
        if creation.deferred:
            attributes[DEFERRED] = "1"
        uploadId = await self.app.runner.run(
            self.app.store.create, creation.destination,
            None if parts else total, attributes, isinstance(creation.concat, Partial), uploadId,
        )
        notesFor(request).uploadId = uploadId.value
        self.app._emit(
            CREATED, request, uploadId, 0, total, _landing(creation.destination, uploadId),
            detail=_metadataDetail(attributes),
        )
        request.setHeader(b"Location", self._location(request, uploadId))
        if parts:
            return await self._concatenate(request, uploadId, parts, attributes)
        if hasBody:
            return await self._append(
                request, uploadId, PatchHeaders(0, None, checksum), length,
                self._createAnswers, checked=True,
            )
        if total == 0 and not isinstance(creation.concat, Partial):
            # An empty file is complete at its creation (tus-js-client
            # sends no PATCH for it): it lands now.
            return await self._finishStaged(
                request, uploadId, self._createAnswers(uploadId, attributes)
            )
        request.setResponseCode(201)
        await self._expiresFromStore(request, uploadId, total, 0)
        return b""

    async def beforeCreate(self, request: Any, creation: Creation, uploadId: UploadId) -> Creation:
        """
        The one place where a new upload is about to be created: decided
        from its headers and checked, nothing stored yet. The C{pre-create}
        hook may refuse it (its status and reason; C{503} when it failed)
        or choose another destination, checked again against section 1,
        the credential's scope and the disk.
        """
        app = self.app
        if not app._asks(PRE_CREATE):
            return creation
        from uploadsvc.web.app import _clientGone

        gone = _clientGone(request)
        landing = _landing(creation.destination, uploadId)
        upload = HookUpload(
            landing.relative, app.store.keyFor(uploadId), uploadId.value, "tus", 0,
            creation.total, hookMetadata(creation.metadata.raw.decode("ascii")),
        )
        chosen = await app.askPreCreate(request, upload)
        if gone():
            raise CancelledError("the client went away while the pre-create hook ran")
        if chosen is None or chosen == landing:
            return creation
        checkScope(accessOf(request).credential, chosen, UPLOAD)
        if not isinstance(creation.concat, Partial):
            await self._checkDestination(chosen)
        return attrs.evolve(creation, destination=chosen)

    async def _checkDestination(self, path: UploadPath) -> None:
        """
        Refuse at creation a destination that section 1 refuses on disk (a
        link on the way: 403; under a file, a folder: 409) or that holds a
        complete file while overwrite is off (409).
        """
        stored = await self.app.runner.run(self.app.store.inspect, path, False, False)
        if stored.completeSize is not None and not self.app.config.allowOverwrite:
            raise Conflict("exists", f"a complete file is already at {path.relative}")

    def _location(self, request: Any, uploadId: UploadId) -> bytes:
        """
        The upload's URL, as a trusted proxy's client must see it.
        """
        return absoluteURL(
            request, self.app.config.prefix.rstrip(b"/") + b"/.tus/" + uploadId.value.encode("ascii")
        )

    # --- concatenation ---------------------------------------------------

    async def _partsTotal(self, request: Any, parts: list[UploadId]) -> int:
        """
        The length of a final upload: its parts must be partial uploads of
        this server, each complete (else 400, nothing stored changed), each
        in the credential's scope (else 403).
        """
        total = 0
        for part in parts:
            try:
                entry = await self.app.runner.run(self.app.store.describe, part)
                checkCreator(entry.attributes, entry.partial, TUS)
            except NotFound:
                raise BadRequest("bad-concat", "Upload-Concat names an unknown upload") from None
            _checkScope(request, entry.path, b"POST")
            if not entry.partial:
                raise BadRequest("bad-concat", "Upload-Concat names an upload that is not partial")
            if entry.total is None or entry.offset != entry.total:
                raise BadRequest("bad-concat", "Upload-Concat names a partial upload not complete")
            total += entry.total
        if total > self.app.config.maxUploadSize:
            raise TooLarge("too-large", f"uploads are limited to {self.app.config.maxUploadSize} bytes")
        return total

    async def _concatenate(
        self, request: Any, uploadId: UploadId, parts: list[UploadId], attributes: dict[str, str]
    ) -> bytes:
        """
        Fill the new final upload with its parts' bytes (in the store, never
        through memory) and complete it like any upload; then the parts go.
        """
        app = self.app
        try:
            await app.runner.run(app.store.concatenate, uploadId, parts)
        except BaseException as e:
            await app.runner.run(app.store.cancel, uploadId)
            request.responseHeaders.removeHeader(b"Location")  # no upload there
            if isinstance(e, NotFound):
                # A part went (another final took it) since it was looked at.
                raise BadRequest("bad-concat", "Upload-Concat names an unknown upload") from None
            if isinstance(e, Busy) and e.code == "locked":
                # Another request holds a part: another final joining it.
                raise Conflict(
                    "part-in-use", "Upload-Concat names a partial upload that another"
                    " request holds (another final upload joining it?)",
                ) from None
            raise
        body = await self._finishStaged(
            request, uploadId, self._createAnswers(uploadId, attributes)
        )
        for part in parts:
            try:
                await app.runner.run(app.store.cancel, part)
            except UploadError:
                pass  # held or gone: expiry removes what is left
        return body

    async def _finishStaged(
        self, request: Any, uploadId: UploadId, answers: Answers, takeOver: bool = True
    ) -> bytes:
        """
        Complete an upload that is fully staged (a final concatenation, or
        one whose completion failed or was cut short): digest, atomic
        durable rename, answered as C{answers} say.

        @param takeOver: wait for (and ask) a writer in another process to
            let go; otherwise L{Busy} at once.
        """
        app = self.app
        release = await app._acquire(request, uploadId)
        decide = lambda stored: planPatch(  # noqa: E731
            stored, PatchHeaders(stored.offset, None, None), 0
        )
        staged = None
        try:
            if takeOver:
                stored, _, staged = await app._whenUnlocked(
                    request, app.store.keyFor(uploadId), app.store.begin, uploadId,
                    decide, {}, None,
                )
            else:
                stored, _, staged = await app.runner.run(
                    app.store.begin, uploadId, decide, {}, None
                )
            assert staged is not None
            return await app._complete(request, uploadId, staged, stored, DigestSet(), None, answers)
        finally:
            try:
                if staged is not None:
                    await app._close(staged)  # (still open when not completed)
            finally:
                release()

    # --- offsets ---------------------------------------------------------

    async def _head(self, request: Any, uploadId: UploadId) -> bytes:
        checkResumable(headerValue(request.requestHeaders, b"Tus-Resumable"))

        def look() -> tuple[Any, Incomplete]:
            stored = self.app.store.inspect(uploadId)  # the durable offset
            return stored, self.app.store.describe(uploadId)

        request.setHeader(b"Cache-Control", b"no-store")
        try:
            stored, entry = await self.app.runner.run(look)
        except NotFound:
            done = self._done.get(uploadId.value)
            if done is None:
                raise
            _checkScope(request, done.path.relative, b"HEAD")
            self._describe(request, done.size, done.size, done.attributes)
            request.setResponseCode(200)
            return b""
        self._checkEntry(request, entry, b"HEAD")
        if (
            not entry.partial and stored.offset == stored.total
            and not self.app.writers.isHeld(entry.key)
        ):
            # Every byte is in but it never landed (its destination was
            # taken, or a crash came between): land it now, or tell why
            # not, rather than report a finished upload that is not there.
            try:
                return await self._finishStaged(
                    request, uploadId, self._headAnswers(entry), takeOver=False
                )
            except Busy as e:
                if e.code == "hook-failed":
                    raise  # not landed: never reported as finished
                # someone completes it now: report what is staged
        self._describe(request, stored.offset, stored.total, entry.attributes)
        self._expires(request, entry.touched, stored.total, stored.offset)
        request.setResponseCode(200)
        return b""

    def _headAnswers(self, entry: Incomplete) -> Answers:
        def progress(request: Any, offset: int, total: int | None) -> bytes:
            self._describe(request, offset, total, entry.attributes)
            request.setResponseCode(200)
            return b""

        assert entry.uploadId is not None
        return Answers(progress, self._completing(entry.uploadId, entry.attributes, progress))

    def _describe(
        self, request: Any, offset: int, total: int | None, attributes: dict[str, str]
    ) -> None:
        request.setHeader(b"Upload-Offset", b"%d" % offset)
        if total is not None:
            request.setHeader(b"Upload-Length", b"%d" % total)
        else:
            request.setHeader(b"Upload-Defer-Length", b"1")
        if METADATA in attributes:
            request.setHeader(b"Upload-Metadata", attributes[METADATA].encode("ascii"))
        if CONCAT in attributes:
            request.setHeader(b"Upload-Concat", self._concatURLs(request, attributes[CONCAT]))

    def _checkEntry(self, request: Any, entry: Incomplete, method: bytes) -> None:
        """
        Refuse a request on an upload that the draft created or that
        expired (C{404}, as once it is removed: the time its
        C{Upload-Expires} told has passed), or that the request's credential
        may not touch (C{403}).
        """
        checkCreator(entry.attributes, entry.partial, TUS)
        at = expiresAt(entry.touched, self.app.config.expireAfter)
        if at is not None and at <= self.app.clock.seconds():
            raise NotFound("no-upload", "there is no such upload (it expired)")
        _checkScope(request, entry.path, method)

    async def _expiresFromStore(
        self, request: Any, uploadId: UploadId, total: int | None, offset: int
    ) -> None:
        """
        C{Upload-Expires} from the store's record of the upload's last byte
        (L{IUploadStore.touchedAt}), the same in every process and after a
        restart.
        """
        if expiresAt(0, self.app.config.expireAfter) is None:
            return
        try:
            touched = await self.app.runner.run(self.app.store.touchedAt, uploadId)
        except NotFound:
            return
        if touched is not None:
            self._expires(request, touched, total, offset)

    def _concatURLs(self, request: Any, stored: str) -> bytes:
        """
        C{Upload-Concat} as stored, a final upload's parts' URLs as this
        request's client must see them (behind a trusted proxy).
        """
        if not stored.startswith("final;"):
            return stored.encode("ascii")
        prefix = self.app.config.prefix
        concat = parseConcat(stored.encode("ascii"), prefix)
        assert isinstance(concat, Final)
        root = prefix.rstrip(b"/") + b"/.tus/"
        return b"final;" + b" ".join(
            absoluteURL(request, root + part.encode("ascii")) for part in concat.parts
        )

    def _expires(self, request: Any, touched: float, total: int | None, offset: int) -> None:
        """
        C{Upload-Expires} of an incomplete upload (expiration extension).
        """
        at = expiresAt(touched, self.app.config.expireAfter)
        if at is not None and (total is None or offset < total):
            request.setHeader(b"Upload-Expires", httpDate(at).encode("ascii"))

    # --- writing ---------------------------------------------------------

    async def _append(
        self,
        request: Any,
        uploadId: UploadId,
        patch: PatchHeaders,
        length: int | None,
        answersFor: Callable[[UploadId, dict[str, str]], Answers],
        checked: bool = False,
    ) -> bytes | None:
        """
        Stream a PATCH body (or a creation's) onto the upload, as a path
        PUT streams: newest writer wins, the same flow control, digest and
        completion. A failed C{Upload-Checksum} keeps nothing of the body.

        @param answersFor: its answers, given the upload's attributes.
        @param checked: the request may write it (its creation).
        """
        app = self.app
        try:
            entry = await app.runner.run(app.store.describe, uploadId)
        except NotFound:
            done = self._done.get(uploadId.value)
            if done is None:
                raise
            _checkScope(request, done.path.relative, b"PATCH")
            if isFinal(done.attributes.get(CONCAT)):
                raise Forbidden("final-upload", "a final concatenation is not patched") from None
            if retriesCompleted(done.size, patch, length):
                # A retry of the request that completed it (its answer
                # lost): answered as then, its body not read.
                return answersFor(uploadId, done.attributes).progress(
                    request, done.size, done.size
                )
            raise
        if not checked:
            self._checkEntry(request, entry, b"PATCH")
        answers = answersFor(uploadId, entry.attributes)
        key = app.store.keyFor(uploadId)
        # A write (tus's own methods were checked in handle).
        facts = app._headerFacts(
            b"PUT", declaredEnd(patch, length, entry.total), start=patch.offset
        )
        decide = partial(
            planPatch, patch=patch, length=length, isFinal=isFinal(entry.attributes.get(CONCAT)),
        )
        digester = None
        if patch.checksum is not None:
            digester = ContentDigester(
                DigestSet(((patch.checksum.alg, patch.checksum.digest),)),
                newChecksumHasher, _checksumMismatch,
            )
        release = await app._acquire(request, uploadId)
        try:
            began = await app._whenUnlocked(
                request, key, app._checkAndBegin, uploadId, facts, decide, {},
                app.writers.takeHashState(key),
            )
        except BaseException:
            release()
            raise
        result = await app._write(
            request, uploadId, key, False, DigestSet(), digester, release, began, answers,
            lands=not entry.partial,
        )
        if uploadId.value not in self._done:
            # Still incomplete: when it expires now that it got bytes.
            offset = int(request.responseHeaders.getRawHeaders(b"Upload-Offset", [b"0"])[0])
            await self._expiresFromStore(request, uploadId, began[1].total, offset)
        return result

    def _patchAnswers(self, uploadId: UploadId, attributes: dict[str, str]) -> Answers:
        """
        A PATCH is answered C{204} with the new offset, completed or not.
        """

        def progress(request: Any, offset: int, total: int | None) -> bytes:
            request.setResponseCode(204)
            request.setHeader(b"Upload-Offset", b"%d" % offset)
            return b""

        return Answers(progress, self._completing(uploadId, attributes, progress))

    def _createAnswers(self, uploadId: UploadId, attributes: dict[str, str]) -> Answers:
        """
        A creation is answered C{201} with its C{Location} (set already)
        and, with an upload, the offset reached.
        """

        def progress(request: Any, offset: int, total: int | None) -> bytes:
            request.setResponseCode(201)
            request.setHeader(b"Upload-Offset", b"%d" % offset)
            return b""

        return Answers(progress, self._completing(uploadId, attributes, progress))

    def _completing(
        self, uploadId: UploadId, attributes: dict[str, str],
        progress: Callable[[Any, int, int | None], bytes],
    ) -> Callable[[Any, UploadPath, int, bytes, int], bytes]:
        """
        The answer to the request that completed the upload: as C{progress}
        at its full length, remembered (with its C{attributes}) for later
        C{HEAD}s and retried C{PATCH}es, and told.
        """

        def completed(request: Any, path: UploadPath, size: int, sha256: bytes, code: int) -> bytes:
            self._remember(uploadId, size, path, attributes)
            return progress(request, size, size)

        return completed

    def _remember(
        self, uploadId: UploadId, size: int, path: UploadPath, attributes: dict[str, str]
    ) -> None:
        self._forget(uploadId.value)
        done = _Done(size, dict(attributes), path)
        self._done[uploadId.value] = done
        self._doneBytes += _weight(done)
        while len(self._done) > MAX_DONE or self._doneBytes > self.maxDoneBytes:
            self._forget(next(iter(self._done)))

    def _forget(self, uploadId: str) -> None:
        done = self._done.pop(uploadId, None)
        if done is not None:
            self._doneBytes -= _weight(done)

    # --- termination -----------------------------------------------------

    async def _delete(self, request: Any, uploadId: UploadId) -> bytes:
        """
        Termination: end a request still writing the upload, remove it.
        """
        checkResumable(headerValue(request.requestHeaders, b"Tus-Resumable"))
        app = self.app
        # 404 (and 403 out of scope) before anyone is ended.
        self._checkEntry(request, await app.runner.run(app.store.describe, uploadId), b"DELETE")
        key = app.store.keyFor(uploadId)
        release = await app._acquire(request, uploadId)
        try:
            await app._whenUnlocked(request, key, app.store.cancel, uploadId)
        finally:
            release()
        app.writers.forgetHashState(key)
        app._emit(CANCELLED, request, uploadId)
        request.setResponseCode(204)
        return b""


def _weight(done: _Done) -> int:
    """
    The bytes a remembered upload's attributes count for (its text).
    """
    return sum(len(name) + len(value) for name, value in done.attributes.items())


def _landing(destination: UploadPath | None, uploadId: UploadId) -> UploadPath:
    """
    Where an upload made with C{uploadId} lands: C{destination}, or
    C{incoming/<id>}.
    """
    if destination is not None:
        return destination
    return parseRelativePath(f"{INCOMING}/{uploadId.value}")


def _metadataDetail(attributes: dict[str, str]) -> dict[str, Any]:
    """
    An event's detail for a tus upload: its metadata (for hooks).
    """
    metadata = hookMetadata(attributes.get(METADATA))
    return {"metadata": metadata} if metadata else {}


def _checkScope(request: Any, destination: str | None, method: bytes) -> None:
    """
    Refuse (C{403}) a request on an upload whose destination the request's
    credential does not cover, for the method it is served as.
    """
    if destination is None:
        raise outOfScope("this upload has no destination to check")
    override = headerValue(request.requestHeaders, b"X-HTTP-Method-Override")
    checkUpload(
        accessOf(request), parseRelativePath(destination), method,
        overridden=methodOf(request.method, override) != request.method,
    )


def _checksumMismatch(alg: str) -> UploadError:
    return ChecksumMismatch(
        "checksum-mismatch", f"the body's {alg} checksum does not match Upload-Checksum; "
        "nothing was appended",
    )
