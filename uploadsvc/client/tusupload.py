"""
One file's upload over tus 1.0 (C{uploadsvc-upload --protocol tus}): the
loop of L{uploadsvc.client.fileupload.CreatedUpload} with tus's requests. A
creation (C{POST} to the endpoint, the destination as C{filename}
metadata), then C{PATCH}es from the offset the server acknowledged; after a
failure, C{HEAD} on the upload's URL says where to go on (an upload that is
gone is created again). What an answer means is decided in
L{uploadsvc.client.tus}.

Unlike the path protocol, tus has no whole-file digest the server checks at
completion: the result's sha-256 is the file's as read, not one the server
confirmed.
"""

from __future__ import annotations

from typing import Mapping

from uploadsvc.client.decisions import Answer, Completed, Piece
from uploadsvc.client.errors import Fatal
from uploadsvc.client.fileupload import CreatedUpload
from uploadsvc.client.tus import (
    TUS_HEADERS,
    NoTusEndpoint,
    creationHeaders,
    nextPatch,
    patchHeaders,
    readPatch,
    splitTusURL,
)


class TusFileUpload(CreatedUpload):
    """
    The state of one file's tus upload: the endpoint, the destination it
    names, and the upload's URL once created.
    """

    protocolHeaders = TUS_HEADERS
    _endpoint = ""
    _destination: str | None = None

    def prepareTarget(self) -> None:
        try:
            self._endpoint, self._destination = splitTusURL(self.url)
        except (NoTusEndpoint, UnicodeDecodeError) as e:
            raise Fatal(str(e)) from None

    def creation(self) -> tuple[str, Mapping[bytes, bytes]]:
        return self._endpoint, creationHeaders(self.size, self._destination)

    def nextPiece(self, offset: int) -> Piece:
        return nextPatch(offset, self.size, self.settings.chunkSize)

    def appendHeaders(self, piece: Piece, digest: bytes | None) -> Mapping[bytes, bytes]:
        return patchHeaders(piece.start)

    def readAppend(self, answer: Answer, start: int) -> int | Completed:
        return readPatch(answer, start, self.size, self.sendsCredentials())

    async def send(self, offset: int) -> int | None:
        """
        C{PATCH} the next chunk from C{offset}; L{None} once the server
        holds the whole file.
        """
        if offset < self.size:
            newOffset = await super().send(offset)
            if newOffset is not None and newOffset < self.size:
                return newOffset
        await self.finish(None)
        return None
