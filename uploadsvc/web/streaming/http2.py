"""
HTTP/2: L{StreamingH2Connection}, Twisted's C{H2Connection} rendering a
stream with a body at header time and pausing its body per stream (see
L{uploadsvc.web.streaming.h2stream}), with bounded cost for hostile clients.

Imported only when the C{h2} package is installed (C{H2_ENABLED}).
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from h2.events import WindowUpdated
from h2.exceptions import StreamClosedError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from priority.priority import PriorityError
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
    @cvar maxRefusedStreams: streams one connection may have refused (answered
        and reset while the client still sent a body, or refused at header
        time); one more closes it (C{ENHANCE_YOUR_CALM}). The answer to a
        refused request is sent data, which Twisted counts as progress: this
        bounds how long refused requests keep a connection open, and with
        them the body bytes it may send for nobody (see L{_countDiscarded}).
    @cvar maxHeldFrames: DATA frames held for one paused stream (a client
        sending frames of 256 bytes fits a whole stream window); one more
        closes the connection (C{ENHANCE_YOUR_CALM}).
    @cvar maxEmptyFrames: empty DATA frames that do not end their stream
        (they carry nothing, use no window and, while a body is paused, do
        not even meet the idle timeout); one more closes the connection.
    @cvar maxIdlePriorityFrames: PRIORITY frames (or HEADERS priorities) for
        streams that are not open; each adds a node to Twisted's priority
        tree, which its send loop walks recursively (1000 nodes raise
        C{TooManyStreamsError}, a deep chain C{RecursionError}). One more
        closes the connection (C{ENHANCE_YOUR_CALM}), as does any error of
        the priority tree.
    @cvar maxHeaderFields: see L{MAX_HEADER_FIELDS}.
    @cvar maxHeaderBytes: see L{MAX_HEADER_BYTES}.
    @cvar closeGrace: see L{CLOSE_GRACE}.
    """

    streamWindow = DEFAULT_READ_SIZE
    connectionWindow = 4 * DEFAULT_READ_SIZE
    maxConcurrentStreams = 32
    maxRefusedStreams = 100
    maxHeldFrames = 1024
    maxEmptyFrames = 1024
    maxIdlePriorityFrames = 100
    maxHeaderFields = MAX_HEADER_FIELDS
    maxHeaderBytes = MAX_HEADER_BYTES
    closeGrace: float | None = CLOSE_GRACE

    _closing = False
    _graceCall: Any = None
    #: Whether the frames being handled made progress (see L{resetTimeout}).
    _progress = False
    _handlingFrames = False
    #: Whether a pass of the send loop runs (see L{_sendPrioritisedData}).
    _sendingPass = False
    #: Why the connection is to be closed with ENHANCE_YOUR_CALM once the
    #: frames being handled are done (see L{_enhanceYourCalm}).
    _calmReason: str | None = None
    #: Streams this connection refused (see L{maxRefusedStreams}).
    _refusedStreams = 0
    #: Streams the server reset while the client might still send on them.
    _stoppedStreams = 0
    #: Body bytes received on streams that are no longer served.
    _discardedBytes = 0
    #: Empty DATA frames that did not end their stream.
    _emptyFrames = 0
    #: Priorities given to streams that were not open.
    _idlePriorityFrames = 0

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
        initialWindow = self.conn.remote_settings.initial_window_size
        try:
            super().dataReceived(data)
        finally:
            self._handlingFrames = False
        if self._stillProducing and self.conn.remote_settings.initial_window_size != initialWindow:
            self._initialWindowChanged()
        if self._progress:
            self.resetTimeout()
        self._countDiscarded()
        if self._calmReason is not None:
            self._calmDown()
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
        if self._handlingFrames or self._sendingPass:
            return
        super().resetTimeout()

    def _countDiscarded(self) -> None:
        """
        Count the DATA just handled for streams that are not served (reset
        or refused by the server): C{h2} drops it and gives its window back,
        so a client could send a refused body for ever. A stream the server
        stops may still receive what the client sent before it knew, at most
        the stream's window (the server grants a stopped stream no more); past
        one L{streamWindow} per stopped stream (and one to spare) the
        connection is closed (C{ENHANCE_YOUR_CALM}). Frame headers count, so
        that empty frames (which C{h2} answers with a reset each) do too.
        """
        seen, self._meter.dataBytes = self._meter.dataBytes, {}
        if not self._stillProducing:
            return
        for streamID, length in seen.items():
            if streamID not in self.streams:
                self._discardedBytes += length
        if self._discardedBytes > self.streamWindow * (self._stoppedStreams + 1):
            self._enhanceYourCalm(
                f"{self._discardedBytes} body bytes sent on streams it was told to stop"
            )

    def _streamStopped(self, refused: bool, sending: bool = True) -> None:
        """
        The server stopped a stream: if the client may still send on it,
        allow for the body bytes already under way; count a refusal.

        @param refused: whether the stream was refused (not taken over).
        @param sending: whether the client may still send on it.
        """
        if sending:
            self._stoppedStreams += 1
        if refused:
            self._refusedStreams += 1
            if self._refusedStreams > self.maxRefusedStreams:
                self._enhanceYourCalm(f"more than {self.maxRefusedStreams} refused streams")

    # -- sending --------------------------------------------------------------

    def _sendPrioritisedData(self, *args: Any) -> None:
        """
        One pass of Twisted's send loop. Twisted never blocks a stream whose
        response data has no flow-control window: the loop would pick it,
        send nothing and reschedule itself at once, for ever, resetting the
        idle timeout each time. Such streams are blocked first (a
        C{WINDOW_UPDATE} unblocks them), and only a pass that sent something
        is progress.
        """
        self._blockStarvedStreams()
        before = (self.conn.outbound_flow_control_window, len(self._outboundStreamQueues))
        self._sendingPass = True
        try:
            super()._sendPrioritisedData(*args)
        finally:
            self._sendingPass = False
        after = (self.conn.outbound_flow_control_window, len(self._outboundStreamQueues))
        if after != before:
            self.resetTimeout()

    def _blockStarvedStreams(self) -> None:
        """
        Block, in the priority tree, every stream whose next response bytes
        cannot be sent for want of window (its own or the connection's).
        """
        for streamID, queue in self._outboundStreamQueues.items():
            if (
                queue
                and isinstance(queue[0], bytes)  # (not Twisted's end-of-stream marker)
                and queue[0]
                and self.conn.local_flow_control_window(streamID) <= 0
            ):
                self.priority.block(streamID)

    def _handleWindowUpdate(self, event: Any) -> None:
        """
        Window opened: Twisted unblocks the streams that have data waiting,
        but leaves a send loop that found nothing to send asleep.
        """
        super()._handleWindowUpdate(event)
        waiting, self._sendingDeferred = self._sendingDeferred, None
        if waiting is not None:
            waiting.callback(None)

    def _initialWindowChanged(self) -> None:
        """
        The client's SETTINGS changed every stream's window, which Twisted
        ignores: streams blocked for want of window may send again.
        """
        self._handleWindowUpdate(WindowUpdated(stream_id=0, delta=0))

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

    def _enhanceYourCalm(self, reason: str) -> None:
        """
        The client abuses the connection: send GOAWAY (C{ENHANCE_YOUR_CALM})
        and close, with one log line; while frames are being handled, once
        they are done (Twisted would go on handling the rest of the batch
        with its streams gone).

        @param reason: what the client did, for the log.
        """
        if self._calmReason is None:
            self._calmReason = reason
        if not self._handlingFrames:
            self._calmDown()

    def _calmDown(self) -> None:
        reason = self._calmReason
        if self._closing or not self._stillProducing or reason is None:
            return
        self._log.info(
            "closing {client}: {reason}",
            client=self.transport.getPeer(), reason=reason,  # type: ignore[union-attr]
        )
        self.conn.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        self._terminate(Failure(ConnectionAborted(reason)))

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

    def _refusedWithoutPath(self, event: Any) -> bool:
        """
        Refuse (C{400}) a request without C{:path}: h2 accepts one for
        C{CONNECT} (RFC 9113 section 8.5), which Twisted cannot build a
        request from (C{None.split}).

        @return: whether the request was refused.
        """
        if any(name == b":path" for name, _ in event.headers):
            return False
        self._refuseStream(
            event.stream_id, event.stream_ended is None,
            400, "a request without :path (CONNECT is not served)",
        )
        return True

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
        self._streamStopped(refused=True, sending=open)
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
            if not self._dataFrameAllowed(event):
                return
            if event.data:
                self._progress = True
            super()._requestDataReceived(event)
        else:
            # A frame read together with the one that made us let go of its
            # stream: nobody reads it, only the connection's window is owed.
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _dataFrameAllowed(self, event: Any) -> bool:
        """
        Whether a DATA frame of a served stream is handed to Twisted, which
        holds every frame of a paused stream, empty ones included (they use
        no window, so nothing bounds them). An empty frame that does not end
        the stream carries nothing and is dropped; past L{maxEmptyFrames} of
        them, or past L{maxHeldFrames} frames held for one paused stream, the
        connection is closed (C{ENHANCE_YOUR_CALM}).
        """
        if not event.data and not event.flow_controlled_length:
            if event.stream_ended is None:
                self._emptyFrames += 1
                if self._emptyFrames > self.maxEmptyFrames:
                    self._enhanceYourCalm(f"more than {self.maxEmptyFrames} empty DATA frames")
            return False
        stream = self.streams[event.stream_id]
        if not stream.producing and len(stream._inboundDataBuffer) >= self.maxHeldFrames:
            self._enhanceYourCalm(f"more than {self.maxHeldFrames} DATA frames for a paused stream")
            return False
        return True

    def _handlePriorityUpdate(self, event: Any) -> None:
        """
        A priority for a stream: counted if the stream is not open (see
        L{maxIdlePriorityFrames}); an error of the priority tree closes the
        connection instead of escaping from C{dataReceived}.
        """
        if self._calmReason is not None:
            return
        if event.stream_id not in self.streams:
            self._idlePriorityFrames += 1
            if self._idlePriorityFrames > self.maxIdlePriorityFrames:
                self._enhanceYourCalm(
                    f"more than {self.maxIdlePriorityFrames} priorities for streams that are not open"
                )
                return
        try:
            super()._handlePriorityUpdate(event)
        except PriorityError as e:
            self._enhanceYourCalm(f"a priority the tree refused: {e!r}")

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
