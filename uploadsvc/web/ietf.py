"""
The IETF resumable-upload draft's front end (docs/protocol.md section 9):
creation on a file path or at C{POST /.uploads/}, the C{104} interim
answer, offset retrieval, append, cancel and C{OPTIONS}.

The decisions are L{uploadsvc.protocol.ietf}'s; the writing is the
L{UploadApp}'s own machinery (writer registry, refusal order, disk pool,
streaming receiver, completion), on an upload named by a server-assigned
L{UploadId}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Coroutine

from twisted.internet.defer import CancelledError

from uploadsvc.errors import BadRequest, Conflict, MethodNotAllowed, NotFound
from uploadsvc.ops.events import CANCELLED, CREATED
from uploadsvc.ops.hooks import PRE_CREATE, HookUpload
from uploadsvc.ops.requestnotes import notesFor
from uploadsvc.protocol import ietf
from uploadsvc.protocol.creator import IETF, checkCreator, createdBy
from uploadsvc.protocol.decisions import Stored
from uploadsvc.protocol.expiry import expiresAt, secondsLeft
from uploadsvc.protocol.paths import UploadPath, parseRelativePath
from uploadsvc.protocol.refusals import METHODS, Facts, firstRefusal
from uploadsvc.protocol.scopes import UPLOAD, checkCreation, checkScope, checkUpload, outOfScope
from uploadsvc.storage.interfaces import INCOMING, UploadId, newUploadId, parseUploadId
from uploadsvc.web.access import accessOf
from uploadsvc.web.answers import Answers, completed
from uploadsvc.web.contentdigest import ContentDigester
from uploadsvc.web.requestheaders import contentLength, digestsB64
from uploadsvc.web.forwarded import absoluteURL
from uploadsvc.web.streaming import sendInterim

if TYPE_CHECKING:
    from uploadsvc.web.app import UploadApp

#: The folder of upload resources, under the mount prefix.
UPLOADS = b"/.uploads/"

_ROOT_METHODS = (b"POST", b"OPTIONS")
_RESOURCE_METHODS = (b"HEAD", b"PATCH", b"DELETE", b"OPTIONS")


def _headers(request: Any) -> dict[bytes, list[bytes]]:
    """
    The request's fields as L{uploadsvc.protocol.ietf} reads them.
    """
    return {name.lower(): values for name, values in request.requestHeaders.getAllRawHeaders()}


class DraftFrontEnd:
    """
    The draft's requests, served for one L{UploadApp}.

    @ivar pathMethods: the methods a file path answers (C{OPTIONS} added).
    """

    pathMethods = METHODS + (b"OPTIONS",)

    def __init__(self, app: UploadApp) -> None:
        self.app = app
        self.versions = app.config.ietfVersions

    # --- routing ----------------------------------------------------------

    def owns(self, request: Any) -> bool:
        """
        Whether C{request} is for C{/.uploads/} (after the mount prefix).
        """
        raw = request.uri.split(b"?", 1)[0]
        return raw.startswith(self.app.config.prefix + UPLOADS)

    def serve(self, request: Any) -> Coroutine[Any, Any, bytes | None]:
        """
        Serve a request to C{/.uploads/} or an upload resource under it.
        """
        notesFor(request).protocol = "ietf"
        raw = request.uri.split(b"?", 1)[0]
        rest = raw[len(self.app.config.prefix + UPLOADS):]
        method = request.method
        allowed: tuple[bytes, ...] = _RESOURCE_METHODS if rest else _ROOT_METHODS
        if method not in allowed:
            raise MethodNotAllowed(
                "method", f"use {' or '.join(m.decode() for m in allowed)} here",
                {b"Allow": b", ".join(allowed)},
            )
        if method == b"OPTIONS":
            return self._options(request)
        if not rest:
            return self._createAtRoot(request)
        try:
            uploadId = parseUploadId(rest.decode("ascii"))
        except UnicodeDecodeError:
            raise NotFound("no-upload", "there is no such upload") from None
        notesFor(request).uploadId = uploadId.value
        handler: Callable[[Any, UploadId], Coroutine[Any, Any, bytes | None]] = {
            b"HEAD": self._head, b"PATCH": self._patch, b"DELETE": self._delete,
        }[method]
        return handler(request, uploadId)

    def onPath(self, request: Any, path: UploadPath) -> Coroutine[Any, Any, bytes | None] | None:
        """
        The draft's part of a request to a file path: C{OPTIONS}, or a
        C{POST}/C{PUT} that creates a draft upload; L{None} for the rest
        (the path interface's own).
        """
        if request.method == b"OPTIONS":
            return self._options(request)
        if request.method not in (b"PUT", b"POST"):
            return None
        creation = ietf.readCreation(_headers(request), contentLength(request), self.versions)
        if creation is None:
            return None
        notesFor(request).protocol = "ietf"
        return self._create(request, path, creation, named=True)

    # --- answers ----------------------------------------------------------

    def _limit(self, version: ietf.Version, touched: float | None) -> bytes:
        """
        C{Upload-Limit}: C{max-age} from when the upload last received a
        byte as the store records it (L{IUploadStore.touchedAt}: the same
        in every process, and after a restart); a fresh upload's lifetime
        when C{touched} is L{None}.
        """
        expireAfter = self.app.config.expireAfter
        now = self.app.clock.seconds()
        left = secondsLeft(now if touched is None else touched, now, expireAfter)
        return ietf.formatLimit(version, self.app.config.maxUploadSize, left)

    async def _touchedAt(self, uploadId: UploadId) -> float | None:
        """
        When the store says the upload last received a byte (L{None}: gone).
        """
        try:
            return await self.app.runner.run(self.app.store.touchedAt, uploadId)  # type: ignore[no-any-return]
        except NotFound:
            return None

    def _location(self, request: Any, uploadId: UploadId) -> bytes:
        """
        The upload's URL, as a trusted proxy's client must see it.
        """
        return absoluteURL(request, self.app.config.prefix + UPLOADS + uploadId.value.encode("ascii"))

    def _stamp(self, request: Any, version: ietf.Version) -> None:
        request.setHeader(b"Upload-Draft-Interop-Version", b"%d" % version.number)

    def _progress(
        self, version: ietf.Version, status: int, location: bytes | None
    ) -> Callable[[Any, int, int | None], bytes]:
        """
        The answer to a request that left the upload incomplete (its
        C{Upload-Limit} added by L{_write}, from the store).
        """

        def answer(request: Any, offset: int, total: int | None) -> bytes:
            request.setResponseCode(status)
            if location is not None:
                request.setHeader(b"Location", location)
            request.setHeader(b"Upload-Offset", b"%d" % offset)
            request.setHeader(b"Upload-Complete", b"?0")
            if total is not None:
                request.setHeader(b"Upload-Length", b"%d" % total)
            if status != 204:  # (RFC 9110 section 8.6: never on a 204)
                request.setHeader(b"Content-Length", b"0")
            return b""

        return answer

    async def _options(self, request: Any) -> bytes:
        version = ietf.readVersion(_headers(request), self.versions)
        self._stamp(request, version)
        request.setResponseCode(204)
        request.setHeader(b"Upload-Limit", self._limit(version, None))
        request.setHeader(b"Accept-Patch", ietf.PARTIAL_UPLOAD)
        return b""

    # --- creation ---------------------------------------------------------

    async def _createAtRoot(self, request: Any) -> bytes | None:
        headers = _headers(request)
        creation = ietf.readCreation(headers, contentLength(request), self.versions)
        if creation is None:
            if ietf.parseBoolean(headers.get(b"upload-complete")) is None:
                raise BadRequest("ietf-complete", "a creation needs Upload-Complete (?0 or ?1)")
            # An unknown version with ?1: a plain upload of the whole body
            # to the destination, as on a file path (no 104).
            plain = {k: v for k, v in headers.items() if k != b"upload-draft-interop-version"}
            creation = ietf.readCreation(plain, contentLength(request), self.versions)
            assert creation is not None and not creation.interim
        prefix = self.app.config.prefix
        name = ietf.dispositionFilename(headers.get(b"content-disposition"))
        if name is not None:
            path: UploadPath | None = parseRelativePath(name, prefix)
        else:
            # tus-js-client's ietf-draft-05 mode names it in Upload-Metadata;
            # without any name: incoming/<id> (its id made in _create).
            path = ietf.metadataDestination(headers.get(b"upload-metadata"), prefix)
        return await self._create(request, path, creation, named=False)

    async def _create(
        self, request: Any, path: UploadPath | None, creation: ietf.DraftWrite, named: bool
    ) -> bytes | None:
        """
        Make a draft upload for C{path} (L{None}: C{incoming/<id>}) and
        stream the creation's body into it.

        @param named: C{path} is the request's own (a file path), which a
            signed URL names.
        """
        app = self.app
        length = contentLength(request)
        version = creation.version
        self._stamp(request, version)
        checkCreation(accessOf(request), path, named)
        facts, digests, contentDigests = self._facts(request, version, length, creation.length, 0)
        uploadId = newUploadId()
        landing = path if path is not None else parseRelativePath(f"{INCOMING}/{uploadId.value}")
        # The disk's refusals (403 through a link, 507, 409) before anything is made.
        await self._checkLanding(landing, facts)
        if app._asks(PRE_CREATE):
            chosen = await self._preCreate(request, landing, uploadId, creation.length)
            if chosen is not None:
                # The credential's folder binds the hook's choice too (a
                # signed URL's path was the request's; the hook is the
                # operator's word, as on a path upload).
                checkScope(accessOf(request).credential, chosen, UPLOAD)
                await self._checkLanding(chosen, facts)
                landing = chosen
        uploadId = await app.runner.run(
            app.store.create, landing, None, createdBy(IETF), False, uploadId
        )
        key = app.store.keyFor(uploadId)
        notesFor(request).uploadId = uploadId.value
        self.app._emit(CREATED, request, uploadId, 0, creation.length, landing)
        location = self._location(request, uploadId)
        if creation.interim:
            sendInterim(request, 104, [
                (b"Location", location),
                (b"Upload-Draft-Interop-Version", b"%d" % version.number),
                (b"Upload-Limit", self._limit(version, await self._touchedAt(uploadId))),
            ])
        return await self._write(
            request, uploadId, key, landing, facts, digests, contentDigests,
            lambda s: ietf.planWrite(s, creation, length), creation.complete, version,
            self._progress(version, 201, location),
        )

    async def _checkLanding(self, path: UploadPath, facts: Facts) -> None:
        """
        Refuse a destination that the disk refuses (a link on the way,
        C{403}; no room, C{507}) or that holds a complete file while
        overwrite is off (C{409}).
        """
        app = self.app
        await app.runner.run(app._check, path, facts, False)
        stored = await app.runner.run(app.store.inspect, path, False)
        if stored.completeSize is not None and not app.config.allowOverwrite:
            raise Conflict("exists", "a complete file is already there")

    async def _preCreate(
        self, request: Any, path: UploadPath, uploadId: UploadId, total: int | None
    ) -> UploadPath | None:
        """
        Ask C{pre-create} about a draft creation (nothing made yet): its
        refusal or failure is raised; the destination it chose instead, or
        L{None}.
        """
        from uploadsvc.web.app import _clientGone

        gone = _clientGone(request)
        upload = HookUpload(
            path.relative, self.app.store.keyFor(uploadId), uploadId.value, "ietf", 0, total,
        )
        chosen = await self.app.askPreCreate(request, upload)
        if gone():
            raise CancelledError("the client went away while the pre-create hook ran")
        return None if chosen is None or chosen == path else chosen

    def _facts(
        self, request: Any, version: ietf.Version, length: int | None, total: int | None,
        offset: int,
    ) -> tuple[Facts, Any, Any]:
        """
        The refusals the headers decide (413 and 503 in section 6's order),
        raised (a 413 with C{Upload-Limit}, as the draft asks); and the
        request's digests.
        """
        from uploadsvc.web.app import _attempt, _digestFields

        app = self.app
        fields, fieldError = _attempt(_digestFields, request)
        digests, contentDigests = fields or (None, None)
        claims = [c for c in (total, None if length is None else offset + length) if c is not None]
        facts = Facts(
            credentials=None, path=None, method=request.method, methods=(request.method,),
            declaredEnd=max(claims, default=None), declaredStart=offset,
            maxUploadSize=app.config.maxUploadSize, minFreeBytes=app.config.minFreeBytes,
            busy=bool(app.config.maxUploads and app.writers.busy() >= app.config.maxUploads),
            rangeError=None, fieldError=fieldError,
        )
        refusal = firstRefusal(facts)
        if refusal is not None:
            if refusal.status == 413:
                refusal.headers[b"Upload-Limit"] = self._limit(version, None)
            raise refusal
        if digests is None:
            from uploadsvc.protocol.digests import DigestSet

            digests, contentDigests = DigestSet(), DigestSet()
        return facts, digests, contentDigests

    async def _write(
        self, request: Any, uploadId: UploadId, key: str, path: UploadPath | None,
        facts: Facts, digests: Any, contentDigests: Any,
        decide: Callable[[Stored], Any], complete: bool, version: ietf.Version,
        answer: Callable[[Any, int, int | None], bytes],
    ) -> bytes | None:
        """
        Take the upload (ending an older request on it), decide under its
        lock, stream the body and answer, as the path interface does.
        """
        app = self.app
        release = await app._acquire(request, uploadId)
        try:
            began = await app._whenUnlocked(
                request, key, app._checkAndBegin, uploadId, facts, decide,
                digestsB64(digests), app.writers.takeHashState(key),
            )
        except BaseException:
            release()
            raise
        stored, plan, staged = began
        result = await app._write(
            request, uploadId, key, False, digests,
            ContentDigester(contentDigests) if contentDigests else None, release, began,
            Answers(answer, completed), completes=complete,
            overflow=lambda: ietf.inconsistentLength(
                version, f"the body runs past the upload length {plan.total}"
            ),
        )
        if request.responseHeaders.getRawHeaders(b"Upload-Complete") == [b"?0"]:
            # Still open: how long it is kept now, as the store records it.
            request.setHeader(b"Upload-Limit", self._limit(version, await self._touchedAt(uploadId)))
        return result

    # --- upload resources -------------------------------------------------

    async def _take(self, request: Any, uploadId: UploadId) -> tuple[ietf.Version, str, Callable[[], None]]:
        """
        The version of a HEAD or DELETE (stamped on its answer), the
        upload's key, and its writer slot: one writer at a time, so this
        request ends an older one still open on the upload (the draft's
        concurrency rule), whose bytes are kept.
        """
        version = ietf.readVersion(_headers(request), self.versions)
        self._stamp(request, version)
        await self._checkUpload(request, uploadId)
        release = await self.app._acquire(request, uploadId)
        return version, self.app.store.keyFor(uploadId), release

    async def _checkUpload(self, request: Any, uploadId: UploadId) -> float:
        """
        Refuse a request on an upload that is gone, expired or another
        protocol's (C{404}: a tus upload is never the draft's), or that its
        credential may not touch (C{403}), before it ends anyone or reads a
        byte; return when the upload last received a byte.
        """
        entry = await self.app.runner.run(self.app.store.describe, uploadId)
        checkCreator(entry.attributes, entry.partial, IETF)
        at = expiresAt(entry.touched, self.app.config.expireAfter)
        if at is not None and at <= self.app.clock.seconds():
            raise NotFound("no-upload", "there is no such upload (it expired)")
        if entry.path is None:
            raise outOfScope("this upload has no destination to check")
        checkUpload(accessOf(request), parseRelativePath(entry.path), request.method)
        return entry.touched

    async def _head(self, request: Any, uploadId: UploadId) -> bytes:
        app = self.app
        version, key, release = await self._take(request, uploadId)
        try:
            stored = await app.runner.run(app.store.inspect, uploadId, True, True)
        finally:
            release()
        if not stored.incomplete:
            raise NotFound("no-upload", "there is no such upload")
        request.setResponseCode(204)
        request.setHeader(b"Upload-Offset", b"%d" % stored.offset)
        request.setHeader(b"Upload-Complete", b"?0")
        if stored.total is not None:
            request.setHeader(b"Upload-Length", b"%d" % stored.total)
        request.setHeader(b"Upload-Limit", self._limit(version, await self._touchedAt(uploadId)))
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    async def _patch(self, request: Any, uploadId: UploadId) -> bytes | None:
        app = self.app
        headers = _headers(request)
        version = ietf.readVersion(headers, self.versions)
        self._stamp(request, version)
        length = contentLength(request)
        append = ietf.readAppend(version, headers, length)
        facts, digests, contentDigests = self._facts(
            request, version, length, append.length, append.offset
        )
        await self._checkUpload(request, uploadId)
        key = app.store.keyFor(uploadId)
        return await self._write(
            request, uploadId, key, None, facts, digests, contentDigests,
            lambda s: ietf.planWrite(s, append, length), append.complete, version,
            self._progress(version, 204, None),
        )

    async def _delete(self, request: Any, uploadId: UploadId) -> bytes:
        app = self.app
        _, key, release = await self._take(request, uploadId)
        try:
            gone = await app._whenUnlocked(request, key, app.store.cancel, uploadId)
        finally:
            release()
        if not gone:
            raise NotFound("no-upload", "there is no such upload")
        app.writers.forgetHashState(key)
        self.app._emit(CANCELLED, request, uploadId)
        request.setResponseCode(204)
        return b""
