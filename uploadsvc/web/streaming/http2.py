"""
HTTP/2: L{StreamingH2Connection}, Twisted's C{H2Connection} rendering a
stream with a body at header time and pausing its body per stream (see
L{uploadsvc.web.streaming.h2stream}). Below it, L{GuardedH2Connection}
(C{h2guard}) bounds what a hostile client costs and L{H2ConnectionFixes}
(C{h2fixes}) fixes Twisted's send loop and closing.

Imported only when the C{h2} package is installed (C{H2_ENABLED}).
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError
from twisted.python.failure import Failure

from uploadsvc.web.streaming.h2guard import GuardedH2Connection
from uploadsvc.web.streaming.h2stream import HTTP2BodyGate
from uploadsvc.web.streaming.request import StreamingRequest


class StreamingH2Connection(GuardedH2Connection):
    """
    Twisted's HTTP/2 connection, streaming request bodies (see the package
    docstring): a stream with a body to come is rendered when its headers
    are in, its body is paused per stream (L{HTTP2BodyGate}), and a stream
    answered before its body ended is reset with C{NO_ERROR}, the window of
    what nobody will read handed back. The bounds on hostile clients are
    L{GuardedH2Connection}'s.
    """

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self._heldContinues: set[int] = set()
        self._pausedBodies: set[int] = set()
        self._pausedTimeOut: int | float | None = None

    def _requestReceived(self, event: Any) -> None:
        """
        A stream's headers are in: Twisted builds its C{H2Stream} and
        request; a request with a body to come is rendered now. One with
        too many fields is answered C{431} without a request.
        """
        self._progress = True
        if self._refusedWithoutPath(event):
            return
        fields = sum(1 for name, _ in event.headers if not name.startswith(b":"))
        if fields > self.maxHeaderFields:
            self._refuseStream(
                event.stream_id, event.stream_ended is None,
                431, f"too many header fields (at most {self.maxHeaderFields})",
            )
            return
        super()._requestReceived(event)
        streamID = event.stream_id
        expectContinue = streamID in self._heldContinues
        self._heldContinues.discard(streamID)
        stream = self.streams[streamID]
        request = stream._request
        if isinstance(request, StreamingRequest):
            hasBody = (
                event.stream_ended is None
                and request.requestHeaders.getRawHeaders(b"content-length") != [b"0"]
            )
            request._http2HeadersReceived(HTTP2BodyGate(self, stream, expectContinue), hasBody)

    def _send100Continue(self, streamID: int) -> None:
        if streamID not in self.streams:
            # The H2Stream asks while it is being built, before the request
            # decided anything: held until the body is accepted.
            self._heldContinues.add(streamID)
            return
        super()._send100Continue(streamID)

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            if not self._dataFrameAllowed(event):
                return
            if event.data:
                self._progress = True
            super()._requestDataReceived(event)
        else:
            # A frame read together with the one that made us let go of its
            # stream: nobody reads it, only the connection's window is owed.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            self._progress = True
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        """
        Twisted lets go of a stream: its response ended, it was reset, or
        the connection is gone.
        """
        stream = self.streams.get(streamID)
        super()._requestDone(streamID)
        self._bodyResumed(streamID)
        if stream is None or not self._stillProducing:
            return
        h2stream = self.conn.streams.get(streamID)
        if h2stream is not None and not h2stream.closed:
            # Answered while the client still sends the body: ask it to stop
            # (RFC 9113 section 8.1) instead of reading what nobody wants.
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
            self._streamStopped(refused=True)
        # Body bytes held for a paused stream were never acknowledged; hand
        # their window back to the connection.
        held = stream._inboundDataBuffer
        owed = sum(length for _, length in held if length is not None)
        held.clear()
        if owed:
            self.conn.acknowledge_received_data(owed, streamID)
        self._tryToWriteControlData()

    def _abortStream(self, streamID: int, reason: Failure) -> None:
        stream = self.streams.get(streamID)
        if stream is None:
            return
        try:
            self.conn.reset_stream(streamID, ErrorCodes.CANCEL)
        except StreamClosedError:
            pass
        else:
            self._streamStopped(refused=False)
        if not self._tryToWriteControlData():
            return  # the whole connection was dropped
        stream.connectionLost(reason)
        self._requestDone(streamID)

    def goAway(self) -> None:
        """
        Close a connection that has nothing under way (the server stops):
        GOAWAY with C{NO_ERROR} first, naming the last stream the client
        opened as the last one served, then as after a timeout.

        Not sent earlier in a drain, while streams are still under way,
        though RFC 9113 section 6.8 allows it: the C{h2} library, which
        clients such as httpx use, takes a GOAWAY as the end of every
        stream (python-hyper/h2#1181), so an upload in flight would fail.
        """
        if self._closing or self.transport is None:
            return
        self.conn.close_connection(error_code=ErrorCodes.NO_ERROR)
        self.transport.write(self.conn.data_to_send())
        self._stopReading()
        self.transport.loseConnection()
        self._letGo()

    def _bodyPaused(self, streamID: int) -> None:
        if not self._pausedBodies:
            # The server is the slow side now: the idle timeout must not fire.
            self._pausedTimeOut = self.setTimeout(None)
        self._pausedBodies.add(streamID)

    def _bodyResumed(self, streamID: int) -> None:
        if streamID not in self._pausedBodies:
            return
        self._pausedBodies.discard(streamID)
        if not self._pausedBodies:
            timeOut, self._pausedTimeOut = self._pausedTimeOut, None
            if timeOut is not None and self._stillProducing:
                self.setTimeout(timeOut)
