"""
One file's upload over the IETF resumable-upload draft
(C{uploadsvc-upload --protocol ietf}): the loop of
L{uploadsvc.client.fileupload.CreatedUpload} with the draft's requests.
What an answer means is decided in L{uploadsvc.client.ietf}.

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

from typing import Mapping

from uploadsvc.client.decisions import Answer, Completed, Piece, checkDigest, readQuery
from uploadsvc.client.errors import Fatal
from uploadsvc.client.fileupload import CreatedUpload
from uploadsvc.client.ietf import (
    DRAFT_HEADERS,
    DraftTarget,
    appendHeaders,
    creationHeaders,
    draftTarget,
    nextAppend,
    readAppend,
)


class DraftFileUpload(CreatedUpload):
    """
    The state of one file's draft upload: where it is created, the upload's
    URL once created, and whether it was found complete at the file's URL.
    """

    protocolHeaders = DRAFT_HEADERS
    _target = DraftTarget("", None, None)
    _landed = False

    def prepareTarget(self) -> None:
        try:
            self._target = draftTarget(self.url)
        except UnicodeDecodeError:
            raise Fatal(f"the destination in the URL is not UTF-8: {self.url}") from None

    def creation(self) -> tuple[str, Mapping[bytes, bytes]]:
        return self._target.creationURL, creationHeaders(self.size, self._target.destination)

    def nextPiece(self, offset: int) -> Piece:
        return nextAppend(offset, self.size, self.settings.chunkSize, self.settings.finalPiece)

    def appendHeaders(self, piece: Piece, digest: bytes | None) -> Mapping[bytes, bytes]:
        return appendHeaders(piece.start, piece.closing, digest)

    def readAppend(self, answer: Answer, start: int) -> int | Completed:
        return readAppend(answer, start, self.size, self.sendsCredentials())

    async def whenGone(self) -> int | None:
        """
        After the completing C{PATCH} went out, an upload gone may have
        completed with its answer lost: a complete file of the same size at
        the file's URL ends the upload.
        """
        if self.sentClosing and self._target.fileURL is not None:
            answer = await self.request("HEAD", self._target.fileURL)
            if readQuery(answer, self.size, self.sendsCredentials()).complete:
                self._landed = True
                return self.size
        return None

    async def query(self) -> int:
        if self.size == 0:
            # Created complete in one request by send.
            return 0
        return await super().query()

    async def send(self, offset: int) -> int | None:
        """
        C{PATCH} the next piece from C{offset}; L{None} once the server
        completed the file with the file's digest.
        """
        if self._landed:
            # The completing PATCH (which carried the digest) was accepted.
            await self.finish(None)
            return None
        if self.size == 0:
            await self._createEmpty()
            return None
        return await super().send(offset)

    async def _createEmpty(self) -> None:
        """
        An empty file is created complete in one request (C{?1}).
        """
        answer = await self.sendEmpty(
            "POST", self._target.creationURL,
            creationHeaders(0, self._target.destination, self.digest()),
        )
        outcome = readAppend(answer, 0, 0, self.sendsCredentials())
        if not isinstance(outcome, Completed):
            raise Fatal("the server did not complete the empty file")
        checkDigest(outcome, self.digest())
