"""
One file's upload over the IETF resumable-upload draft
(C{uploadsvc-upload --protocol ietf}): the resume loop of
L{uploadsvc.client.uploader} with the draft's requests. What an answer
means is decided in L{uploadsvc.client.ietf}.

  1. Creation: C{POST} to the file's URL, or to C{/.uploads/} with the
     destination in C{Content-Disposition}, with C{Upload-Complete: ?0} and
     no body. Why not the draft's one-request upload (C{?1} and the whole
     body)? The upload's URL comes first in a C{104} interim response, which
     treq (Twisted's client) never shows: a link cut during that body
     would leave the client without the URL to resume, and a new creation
     would start over. The empty creation's C{201} carries the URL.
  2. C{PATCH}es of C{application/partial-upload} from the server's offset,
     C{?0} up to the closing piece (the last 64 KiB, as the path protocol
     does), which goes with C{?1} and the whole file's C{Repr-Digest}: the
     server refuses a damaged whole and the client checks the digest the
     server answers with.
  3. After any failure, C{HEAD} on the upload's URL for the offset; a
     C{404} there after the completing C{PATCH} was sent means the upload
     may have completed with its answer lost: the file's URL (when known)
     is asked, and a complete file of the same size ends the upload.
     Otherwise the upload is gone (expired) and is created again.
"""

from __future__ import annotations

from uploadsvc.client.decisions import Completed, checkDigest, readQuery
from uploadsvc.client.errors import Fatal
from uploadsvc.client.ietf import (
    DRAFT_HEADERS,
    DraftTarget,
    appendHeaders,
    creationHeaders,
    draftTarget,
    readAppend,
    readCreation,
    readOffset,
)
from uploadsvc.client.uploader import _FileUpload


class DraftFileUpload(_FileUpload):
    """
    The state of one file's draft upload: where it is created, the upload's
    URL once created, and whether a completing C{PATCH} went out.
    """

    _target = DraftTarget("", None, None)
    _uploadURL: str | None = None
    _sentComplete = False
    _landed = False

    def _prepareURL(self) -> None:
        super()._prepareURL()
        try:
            self._target = draftTarget(self._url)
        except UnicodeDecodeError:
            raise Fatal(f"the destination in the URL is not UTF-8: {self._url}") from None

    async def _query(self) -> int:
        """
        The upload's offset (C{HEAD}), or 0 after creating it (the first
        time, or when the server no longer has it).
        """
        if self._uploadURL is not None:
            answer = await self._exchange.request("HEAD", self._uploadURL, {**self._auth, **DRAFT_HEADERS})
            offset = readOffset(answer, self._size, self._sendsCredentials())
            if offset is not None:
                return offset
            if self._sentComplete and self._target.fileURL is not None:
                answer = await self._exchange.request("HEAD", self._target.fileURL, self._auth)
                if readQuery(answer, self._size, self._sendsCredentials()).complete:
                    self._landed = True
                    return self._size
        if self._size == 0:
            # Created complete in one request by _send.
            return 0
        self._requests += 1
        answer = await self._exchange.request(
            "POST", self._target.creationURL,
            {**self._auth, **creationHeaders(self._size, self._target.destination)},
        )
        self._uploadURL = readCreation(answer, self._target.creationURL, self._size, self._sendsCredentials())
        return 0

    async def _send(self, offset: int) -> int | None:
        """
        C{PATCH} the next piece from C{offset}; L{None} once the server
        completed the file with the file's digest.
        """
        if self._landed:
            # The completing PATCH (which carried the digest) was accepted.
            await self._catchUp(self._size)
            self._checkUnchanged()
            return None
        if self._size == 0:
            await self._createEmpty()
            return None
        if offset > self._hash.position:
            await self._catchUp(offset)
        closing = offset >= self._size - self._settings.finalPiece
        length = self._size - offset
        if not closing:
            length = min(length, self._size - self._settings.finalPiece - offset)
            if self._settings.chunkSize is not None:
                length = min(length, self._settings.chunkSize)
        digest = None
        if closing:
            # Finish the digest first, so that the request can carry it.
            await self._catchUp(self._size)
            digest = self._hash.digest()
            self._sentComplete = True
        assert self._uploadURL is not None
        answer = await self._sendRange(
            offset, length, appendHeaders(offset, closing, digest), method="PATCH", url=self._uploadURL
        )
        outcome = readAppend(answer, offset, self._size, self._sendsCredentials())
        if isinstance(outcome, Completed):
            self._checkUnchanged()
            checkDigest(outcome, self._hash.digest())
            return None
        return outcome

    async def _createEmpty(self) -> None:
        """
        An empty file is created complete in one request (C{?1}).
        """
        self._requests += 1
        self._startOffsets.append(0)
        answer = await self._exchange.request(
            "POST", self._target.creationURL,
            {**self._auth, **creationHeaders(0, self._target.destination, self._hash.digest())},
        )
        outcome = readAppend(answer, 0, 0, self._sendsCredentials())
        if not isinstance(outcome, Completed):
            raise Fatal("the server did not complete the empty file")
        checkDigest(outcome, self._hash.digest())
