"""
Measures HTTP/2 header blocks as their frames arrive (pure: bytes in, a
verdict out).
"""

from __future__ import annotations


#: The client's HTTP/2 connection preface (RFC 9113 section 3.4).
_H2_PREFACE_LENGTH = 24
_H2_FRAME_HEADER_LENGTH = 9
_H2_DATA, _H2_HEADERS, _H2_PUSH_PROMISE, _H2_CONTINUATION = 0x0, 0x1, 0x5, 0x9
_H2_END_HEADERS = 0x4


class HeaderBlockMeter:
    """
    Reads the 9-byte frame headers of an HTTP/2 byte stream as it arrives,
    before the C{h2} library buffers anything, and measures each header
    block (a HEADERS frame and its CONTINUATION frames): C{h2} keeps up to
    64 CONTINUATION frames of 16 KiB before it decodes a block.

    It also notes the DATA frames it sees, so that the connection can count
    body bytes that C{h2} discards itself (DATA on a stream it reset, to
    which it answers with window) and that no event reports.

    @ivar maxBlock: the most bytes one encoded header block may have.
    @ivar dataBytes: the bytes of the DATA frames (frame headers included,
        so that empty frames count) seen since it was last emptied, by
        stream.
    """

    def __init__(self, maxBlock: int) -> None:
        self.maxBlock = maxBlock
        self._skip = _H2_PREFACE_LENGTH
        self._head = b""
        self._block = 0
        self.dataBytes: dict[int, int] = {}

    def feed(self, data: bytes) -> bool:
        """
        Account for C{data}, the next bytes the client sent.

        @return: L{False} once a header block is larger than L{maxBlock}.
        """
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            step = _H2_FRAME_HEADER_LENGTH - len(self._head)
            self._head += data[pos : pos + step]
            pos += step
            if len(self._head) < _H2_FRAME_HEADER_LENGTH:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            if kind == _H2_DATA:
                streamID = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
                self.dataBytes[streamID] = (
                    self.dataBytes.get(streamID, 0) + _H2_FRAME_HEADER_LENGTH + length
                )
            if kind in (_H2_HEADERS, _H2_PUSH_PROMISE, _H2_CONTINUATION):
                if kind != _H2_CONTINUATION:
                    self._block = 0
                self._block += length
                if self._block > self.maxBlock:
                    return False
                if flags & _H2_END_HEADERS:
                    self._block = 0
            self._skip = length
        return True
