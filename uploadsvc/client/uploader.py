"""
The resuming upload client: send a file, and when the link fails, ask the
server how much it kept and go on from there, until the file is complete and
its digest checked.

One file's upload is a loop of requests (docs/protocol.md sections 2-4):
  1. C{HEAD} the URL for the stored offset (404: nothing yet);
  2. send from the offset with C{Content-Range: bytes S-E/T}: one long
     request up to the closing piece, or C{chunkSize} pieces;
  3. send the closing piece (the last L{FINAL_PIECE} bytes) with
     C{Repr-Digest} of the whole file, and check the C{Repr-Digest} the
     server answers with.
A C{409} with C{Upload-Offset} moves the offset without a new C{HEAD}. Any
other failure (refused, reset, lost, no progress for C{stallTimeout}
seconds, 5xx) waits per the L{RetryPolicy} and starts again at step 1. The
server keeps every byte it read, so nothing is sent twice beyond what was in
flight when the link failed.

Why a closing piece: C{Repr-Digest} is a header, sent before the body, but
the client computes the digest while it reads the file it sends (no second
pass). Holding back the last 64 KiB lets the client finish the digest before
the last request starts, so that request can carry it and the server refuses
a corrupted whole (section 4) instead of renaming it into place.

This module holds the uploader only: it picks each file's loop by protocol
(L{uploadsvc.client.putupload} is the one above; tus and the draft have
theirs), all of them on L{uploadsvc.client.fileupload}. Which bytes to send
next and what an answer means are decided sans IO in
L{uploadsvc.client.decisions}, L{uploadsvc.client.tus} and
L{uploadsvc.client.ietf}; a request goes through
L{uploadsvc.client.exchange}, and the value types are in
L{uploadsvc.client.jobs}. The reactor (for time), the
HTTP client and the cooperator are passed in; nothing here uses the global
reactor.
"""

from __future__ import annotations

import random
from typing import Iterable, Mapping

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.decisions import FINAL_PIECE
from uploadsvc.client.exchange import HTTPExchange, IHTTPClient
from uploadsvc.client.fileupload import FileUpload, UploadSettings
from uploadsvc.client.ietfupload import DraftFileUpload
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.observer import IUploadObserver, NullObserver
from uploadsvc.client.producer import READ_SIZE
from uploadsvc.client.putupload import PutFileUpload
from uploadsvc.client.tusupload import TusFileUpload

#: Each protocol's loop, by its C{--protocol} name.
_LOOPS: dict[str, type[FileUpload]] = {
    "put": PutFileUpload,
    "tus": TusFileUpload,
    "ietf": DraftFileUpload,
}

#: The protocols the client speaks (C{--protocol}).
PROTOCOLS = tuple(_LOOPS)

__all__ = [
    "FINAL_PIECE",
    "IHTTPClient",
    "UploadJob",
    "UploadResult",
    "UploadSettings",
    "Uploader",
]


def _hasAuthorization(headers: Mapping[str, str]) -> bool:
    return any(name.lower() == "authorization" for name in headers)


class Uploader:
    """
    Uploads files to an uploadsvc server, resuming after every failure.

    @ivar retry: the back-off and give-up policy.
    @ivar chunkSize: bytes per request, or L{None} for one long request per
        attempt.
    @ivar stallTimeout: seconds without progress after which an attempt is
        abandoned (its connection aborted) and retried. Progress is a block
        of the file read for sending (which happens only while the socket
        takes data) or an answer arriving; once the last block is written
        the answer must come within this time, so it should exceed the time
        the link needs to drain a full socket send buffer.
    """

    def __init__(
        self,
        http: IHTTPClient,
        reactor: IReactorTime,
        cooperator: Cooperator,
        *,
        retry: RetryPolicy = RetryPolicy(),
        chunkSize: int | None = None,
        stallTimeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        observer: IUploadObserver | None = None,
        rng: random.Random | None = None,
        readSize: int = READ_SIZE,
        finalPiece: int = FINAL_PIECE,
        protocol: str = "put",
    ) -> None:
        """
        @param http: a L{treq.client.HTTPClient} (or anything with its
            C{request} method).
        @param reactor: the clock for timeouts and back-off (and the reactor
            handed to treq).
        @param cooperator: schedules file reads.
        @param headers: sent with every request, e.g. C{Authorization}.
        @param rng: randomness for the jitter (seeded in tests).
        @param protocol: C{"put"} (path URLs with C{Content-Range}),
            C{"tus"} (the URLs name the tus endpoint, then the destination)
            or C{"ietf"} (the resumable-upload draft: path URLs, or
            C{/.uploads/} then the destination).
        """
        self._http = http
        self._reactor = reactor
        self._cooperator = cooperator
        self.retry = retry
        self.chunkSize = chunkSize
        self.stallTimeout = stallTimeout
        self._headers = dict(headers or {})
        self._observer: IUploadObserver = observer or NullObserver()
        self._rng = rng or random.Random()
        self._readSize = readSize
        self._finalPiece = finalPiece
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        # Refuse bad settings now, not at the first upload.
        self.settings()

    def settings(self) -> UploadSettings:
        """
        The settings an upload started now gets.

        @raise ValueError: when L{chunkSize} is not positive.
        """
        return UploadSettings(
            retry=self.retry,
            chunkSize=self.chunkSize,
            finalPiece=self._finalPiece,
            readSize=self._readSize,
            authorizationConfigured=_hasAuthorization(self._headers),
        )

    def upload(self, job: UploadJob) -> Deferred[UploadResult]:
        """
        Upload one file.

        @return: a L{Deferred} that fires with the L{UploadResult}; it does
            not fail (the result says what went wrong).
        """
        upload = _LOOPS[self.protocol](
            job,
            self.settings(),
            HTTPExchange(self._http, self._reactor, self.stallTimeout, self._headers),
            clock=self._reactor,
            cooperator=self._cooperator,
            observer=self._observer,
            rng=self._rng,
        )
        return Deferred.fromCoroutine(upload.run())

    def uploadMany(self, jobs: Iterable[UploadJob], parallel: int = 4) -> Deferred[list[UploadResult]]:
        """
        Upload files, at most C{parallel} at a time, each resuming on its
        own.

        @return: a L{Deferred} firing with the results, in the order of
            C{jobs}.
        """
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        semaphore = DeferredSemaphore(parallel)
        return gatherResults(
            [semaphore.run(self.upload, job) for job in jobs], consumeErrors=True
        )
