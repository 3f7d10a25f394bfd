"""
One file's upload over tus 1.0 (C{uploadsvc-upload --protocol tus}): the
resume loop of L{uploadsvc.client.uploader} with tus's requests. A creation
(C{POST} to the endpoint, the destination as C{filename} metadata), then
C{PATCH}es from the offset the server acknowledged; after a failure, C{HEAD}
on the upload's URL says where to go on (an upload that is gone is created
again). What an answer means is decided in L{uploadsvc.client.tus}.

Unlike the path protocol, tus has no whole-file digest the server checks at
completion: the result's sha-256 is the file's as read, not one the server
confirmed.
"""

from __future__ import annotations

from uploadsvc.client.errors import Fatal
from uploadsvc.client.tus import (
    TUS_HEADERS,
    NoTusEndpoint,
    creationHeaders,
    patchHeaders,
    readCreation,
    readOffset,
    readPatch,
    splitTusURL,
)
from uploadsvc.client.uploader import _FileUpload


class TusFileUpload(_FileUpload):
    """
    The state of one file's tus upload: the endpoint, the destination it
    names, and the upload's URL once created.
    """

    _endpoint = ""
    _destination: str | None = None
    _uploadURL: str | None = None

    def _prepareURL(self) -> None:
        super()._prepareURL()
        try:
            self._endpoint, self._destination = splitTusURL(self._url)
        except (NoTusEndpoint, UnicodeDecodeError) as e:
            raise Fatal(str(e)) from None

    async def _query(self) -> int:
        """
        The upload's offset (C{HEAD}), or 0 after creating it (the first
        time, or when the server no longer has it).
        """
        if self._uploadURL is not None:
            answer = await self._exchange.request(
                "HEAD", self._uploadURL, {**self._auth, **TUS_HEADERS}
            )
            offset = readOffset(answer, self._size, self._sendsCredentials())
            if offset is not None:
                return offset
        self._requests += 1
        answer = await self._exchange.request(
            "POST", self._endpoint, {**self._auth, **creationHeaders(self._size, self._destination)}
        )
        self._uploadURL = readCreation(answer, self._endpoint, self._size, self._sendsCredentials())
        return 0

    async def _send(self, offset: int) -> int | None:
        """
        C{PATCH} the next chunk from C{offset}; L{None} once the server
        holds the whole file.
        """
        if offset >= self._size:
            await self._catchUp(self._size)
            self._checkUnchanged()
            return None
        if offset > self._hash.position:
            await self._catchUp(offset)
        length = self._size - offset
        if self._settings.chunkSize is not None:
            length = min(length, self._settings.chunkSize)
        assert self._uploadURL is not None
        answer = await self._sendRange(
            offset, length, patchHeaders(offset), method="PATCH", url=self._uploadURL
        )
        newOffset = readPatch(answer, offset, self._size, self._sendsCredentials())
        if newOffset == self._size:
            return await self._send(newOffset)
        return newOffset
