"""
One file's upload over the path protocol (docs/protocol.md sections 2-4,
C{uploadsvc-upload --protocol put}): the loop of
L{uploadsvc.client.fileupload.FileUpload} with C{HEAD} and C{PUT} +
C{Content-Range} on the file's own URL. Which bytes go next and what an
answer means are decided in L{uploadsvc.client.decisions}.
"""

from __future__ import annotations

from uploadsvc.client.decisions import (
    Answer,
    Completed,
    digestField,
    nextPiece,
    readDataAnswer,
    readQuery,
)
from uploadsvc.client.fileupload import FileUpload


class PutFileUpload(FileUpload):
    """
    One file's upload to its own URL: C{HEAD} for the stored offset, then
    C{PUT}s from there, the closing one with the whole file's
    C{Repr-Digest}.
    """

    async def query(self) -> int:
        """
        C{HEAD} the URL: how many bytes does the server hold?
        """
        answer = await self.request("HEAD", self.url)
        held = readQuery(answer, self.size, self.sendsCredentials())
        if held.complete:
            self.markAlreadyComplete()
        return held.offset

    async def send(self, offset: int) -> int | None:
        """
        Send the next request from C{offset}.

        @return: the server's new offset, or L{None} when the upload is
            complete and verified.
        """
        piece = nextPiece(offset, self.size, self.settings.chunkSize, self.settings.finalPiece)
        if piece.total == 0:
            return await self._sendEmpty()
        if offset > self.hashedUpTo:
            # The server holds bytes this run never read (an earlier run
            # sent them): hash them once, so the digest stays whole.
            await self.catchUp(offset)
        if piece.closing:
            # Finish the digest first, so that the request can carry it.
            await self.catchUp(self.size)
        extra: dict[bytes, bytes] = {}
        if self.hashedUpTo == self.size:
            extra[b"Repr-Digest"] = digestField(self.digest())
        contentRange = piece.contentRange()
        assert contentRange is not None
        extra[b"Content-Range"] = contentRange
        answer = await self.sendRange(piece.start, piece.length, extra, "PUT", self.url)
        return await self._handle(answer, piece.start)

    async def _sendEmpty(self) -> int | None:
        """
        A file of zero bytes cannot be described by a C{Content-Range}: send
        it as a plain C{PUT} (section 2), unless it is already there.
        """
        if self.alreadyComplete:
            # Two empty files are the same file.
            return None
        answer = await self.sendEmpty("PUT", self.url, {b"Repr-Digest": digestField(self.digest())})
        return await self._handle(answer, 0)

    async def _handle(self, answer: Answer, start: int) -> int | None:
        """
        Read the answer to a data request that started at C{start}: the
        server's new offset, or L{None} once the completed upload's digest
        matched the file's.
        """
        outcome = readDataAnswer(answer, start, self.size, self.sendsCredentials())
        if not isinstance(outcome, Completed):
            return outcome
        await self.finish(outcome)
        return None
