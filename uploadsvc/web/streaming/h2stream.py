"""
The HTTP/2 body gate: what the HTTP/1.1 channel does for a request's body
(pause, resume, C{100 Continue}, abort), done for one stream of a
L{StreamingH2Connection}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from uploadsvc.web.streaming.http2 import StreamingH2Connection


class HTTP2BodyGate:
    """
    One HTTP/2 stream as a L{StreamingRequest} sees it: what the HTTP/1.1
    channel does for a request's body (pause, resume, C{100 Continue},
    abort), done per stream.

    Pausing the body pauses Twisted's C{H2Stream}: DATA that still arrives is
    held there and, above all, not acknowledged, so no C{WINDOW_UPDATE} goes
    out and the client can send at most the window it already had.

    @ivar command: the request method.
    @ivar path: the request target.
    @ivar expectContinue: whether the client asked for C{100 Continue}.
    """

    def __init__(self, connection: StreamingH2Connection, stream: Any, expectContinue: bool) -> None:
        self._connection = connection
        self._stream = stream
        self._pauses: set[str] = set()
        self.command: bytes = stream.command
        self.path: bytes = stream.path
        self.expectContinue = expectContinue

    @property
    def streamID(self) -> int:
        return int(self._stream.streamID)

    def _active(self) -> bool:
        return self._connection.streams.get(self.streamID) is self._stream

    def _pauseBody(self, reason: str) -> None:
        if not self._pauses and self._active():
            self._stream.pauseProducing()
            self._connection._bodyPaused(self.streamID)
        self._pauses.add(reason)

    def _resumeBody(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses:
            self._connection._bodyResumed(self.streamID)
            if self._active():
                # Hands over what was held, then acknowledges it.
                self._stream.resumeProducing()

    def unsentBytes(self) -> int:
        """
        Response body bytes written to this stream that are still queued
        (no flow-control window yet): they never reach a client that leaves.
        """
        if not self._active():
            return 0
        queue = self._connection._outboundStreamQueues.get(self.streamID) or ()
        return sum(len(chunk) for chunk in queue if isinstance(chunk, bytes))

    def _send100Continue(self) -> None:
        if self._active():
            self._stream._send100Continue()

    def _sendInterim(self, request: Any, head: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """
        Send an interim (1xx) answer on this stream: a HEADERS frame with
        C{:status} and without END_STREAM, before the final answer started.

        @return: whether it was sent.
        """
        if not self._active() or request.startedWriting:
            return False
        block = [(b":status", head.split(b" ", 1)[0])]
        block += [(name.lower(), value) for name, value in headers]
        self._connection.conn.send_headers(self.streamID, block)
        self._connection._tryToWriteControlData()
        return True

    def abort(self) -> None:
        """
        Reset the stream (C{CANCEL}) and tell the request its client is gone.
        """
        self._connection._abortStream(self.streamID, Failure(ConnectionAborted()))

