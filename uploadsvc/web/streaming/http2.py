"""
HTTP/2: L{StreamingH2Connection}, Twisted's C{H2Connection} rendering a
stream with a body at header time and pausing its body per stream (see
L{uploadsvc.web.streaming.h2stream}), with bounded cost for hostile clients.

Imported only when the C{h2} package is installed (C{H2_ENABLED}).
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection

from uploadsvc.web.streaming.constants import (
    CLOSE_GRACE,
    DEFAULT_READ_SIZE,
    H2_DEFAULT_WINDOW,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
)
from uploadsvc.web.streaming.h2stream import HTTP2BodyGate
from uploadsvc.web.streaming.headerblock import HeaderBlockMeter
from uploadsvc.web.streaming.request import StreamingRequest


class StreamingH2Connection(H2Connection):  # type: ignore[misc]
    """
    Twisted's HTTP/2 connection, streaming request bodies (see the package
    docstring), with bounded cost for a client that does not play along:

      - each header block is measured as it arrives (L{HeaderBlockMeter})
        and the decoded field list is capped (C{SETTINGS_MAX_HEADER_LIST_SIZE},
        enforced from the start, not only once the client acknowledged it);
        a block over the bound closes the connection (C{ENHANCE_YOUR_CALM}:
        a block that is not decoded leaves the HPACK state unusable), a
        request with more than L{maxHeaderFields} fields is answered C{431};
      - after a protocol error, a GOAWAY from either side or a reset flood,
        the connection reads nothing more, drops what C{h2} buffered, and is
        aborted if it has not gone within L{closeGrace} seconds (Twisted
        would keep buffering every frame the client still sends, and over
        TLS the connection would never close);
      - the idle timeout counts only progress (a request's headers, body
        bytes, a stream's end, response data sent): PING, SETTINGS,
        WINDOW_UPDATE or PRIORITY frames do not keep a connection alive;
      - control frames queued for a client that does not read (PING and
        SETTINGS acknowledgements, resets) are capped by Twisted
        (C{_maxBufferedControlFrameBytes}, 17 KiB): past it the connection
        is aborted.

    @cvar streamWindow: the flow-control window each stream starts with: how
        much of a body the client may send ahead of what was handed to the
        receiver (Twisted's default is 64 KiB, too little for an upload
        over a link with any latency).
    @cvar connectionWindow: the window of the whole connection, larger than
        one stream's so that a paused stream cannot stall the others; it also
        bounds the body bytes held for one connection.
    @cvar maxConcurrentStreams: streams a client may have open at once (h2's
        default is 100): each open stream holds a request with its fields
        (up to L{maxHeaderBytes}) and, for a client that does not read, its
        answer; this bounds what one connection can make the server hold.
    @cvar maxHeaderFields: see L{MAX_HEADER_FIELDS}.
    @cvar maxHeaderBytes: see L{MAX_HEADER_BYTES}.
    @cvar closeGrace: see L{CLOSE_GRACE}.
    """

    streamWindow = DEFAULT_READ_SIZE
    connectionWindow = 4 * DEFAULT_READ_SIZE
    maxConcurrentStreams = 32
    maxHeaderFields = MAX_HEADER_FIELDS
    maxHeaderBytes = MAX_HEADER_BYTES
    closeGrace: float | None = CLOSE_GRACE

    _closing = False
    _graceCall: Any = None
    #: Whether the frames being handled made progress (see L{resetTimeout}).
    _progress = False
    _handlingFrames = False

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self._heldContinues: set[int] = set()
        self._pausedBodies: set[int] = set()
        self._pausedTimeOut: int | float | None = None
        self._meter = HeaderBlockMeter(self.maxHeaderBytes)
        # The connection's first SETTINGS, in force from the first frame
        # (settings changed later apply only once the client acknowledges
        # them, which a hostile client never does).
        self.conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.maxConcurrentStreams,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.maxHeaderBytes,
        })
        self.conn.decoder.max_header_list_size = self.maxHeaderBytes

    def connectionMade(self) -> None:
        super().connectionMade()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: self.streamWindow})
        if self.connectionWindow > H2_DEFAULT_WINDOW:
            self.conn.increment_flow_control_window(self.connectionWindow - H2_DEFAULT_WINDOW)
        self._tryToWriteControlData()

    # -- reading --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._meter.feed(data):
            self._log.info(
                "closing {client}: an HTTP/2 header block over {limit} bytes",
                client=self.transport.getPeer(), limit=self.maxHeaderBytes,  # type: ignore[union-attr]
            )
            self.conn.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._terminate(Failure(ConnectionAborted("header block too large")))
            return
        self._progress = False
        self._handlingFrames = True
        try:
            super().dataReceived(data)
        finally:
            self._handlingFrames = False
        if self._progress:
            self.resetTimeout()
        if not self._stillProducing:
            # The client's GOAWAY, or an error Twisted met: the connection
            # is over, whatever the client still sends.
            self._stopReading()
            self._letGo()

    def resetTimeout(self) -> None:
        """
        Twisted resets the idle timeout for any frame; frames that are not
        progress (PING, SETTINGS, WINDOW_UPDATE, PRIORITY) must not keep a
        connection alive, so while frames are handled only L{_progress} counts.
        """
        if self._handlingFrames:
            return
        super().resetTimeout()

    # -- closing --------------------------------------------------------------

    def _terminate(self, reason: Failure) -> None:
        """
        A protocol error (or a reset flood): GOAWAY goes out, then nothing
        more is read and the connection closes.
        """
        self._stopReading()
        super()._terminate(reason)
        if not self._stillProducing:
            self._letGo()

    def timeoutConnection(self) -> None:
        super().timeoutConnection()
        self._stopReading()
        self._letGo()

    def _letGo(self) -> None:
        """
        Unregister from the transport, which Twisted never does: until then
        a TLS transport does not even start to close.
        """
        transport: Any = self.transport
        if transport is not None:
            try:
                transport.unregisterProducer()
            except RuntimeError:
                pass  # (nothing was registered)

    def _stopReading(self) -> None:
        if self._closing:
            return
        self._closing = True
        # What h2 buffered (an unfinished frame or header block) is dropped.
        self.conn.incoming_buffer = FrameBuffer(server=True)
        self.conn.incoming_buffer.max_frame_size = self.conn.max_inbound_frame_size
        transport = self.transport
        if transport is None:
            return
        pause = getattr(transport, "pauseProducing", None)
        if pause is not None:
            pause()
        if self.closeGrace is not None:
            self._graceCall = self.callLater(self.closeGrace, self._abortAfterGrace)

    def _abortAfterGrace(self) -> None:
        self._graceCall = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionLost(self, reason: Failure, _cancelTimeouts: bool = True) -> None:  # type: ignore[override]
        super().connectionLost(reason, _cancelTimeouts)
        if _cancelTimeouts:
            # The transport is really gone (not Twisted's own early call).
            self._closing = True
            call, self._graceCall = self._graceCall, None
            if call is not None and call.active():
                call.cancel()

    def _requestReceived(self, event: Any) -> None:
        """
        A stream's headers are in: Twisted builds its C{H2Stream} and
        request; a request with a body to come is rendered now. One with
        too many fields is answered C{431} without a request.
        """
        self._progress = True
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

    def _refuseStream(self, streamID: int, open: bool, code: int, reason: str) -> None:
        """
        Answer a stream that gets no request, and reset it with C{NO_ERROR}
        if the client is still sending on it.
        """
        body = reason.encode("utf-8") + b"\n"
        self.conn.send_headers(streamID, [
            (b":status", b"%d" % code),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ])
        self.conn.send_data(streamID, body, end_stream=True)
        if open:
            self.conn.reset_stream(streamID, ErrorCodes.NO_ERROR)
        self._tryToWriteControlData()

    def _send100Continue(self, streamID: int) -> None:
        if streamID not in self.streams:
            # The H2Stream asks while it is being built, before the request
            # decided anything: held until the body is accepted.
            self._heldContinues.add(streamID)
            return
        super()._send100Continue(streamID)

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
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
        if not self._tryToWriteControlData():
            return  # the whole connection was dropped
        stream.connectionLost(reason)
        self._requestDone(streamID)

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

