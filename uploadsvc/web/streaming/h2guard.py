"""
Bounds on what one hostile HTTP/2 client costs: header blocks measured as
they arrive, a capped field list, and a connection closed
(C{ENHANCE_YOUR_CALM}) past a bound on refused streams, body bytes sent for
nobody, DATA frames held or empty, and priorities for streams that are not
open.
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from h2.settings import SettingCodes, Settings
from priority.priority import PriorityError
from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure

from uploadsvc.web.streaming.constants import (
    DEFAULT_READ_SIZE,
    H2_DEFAULT_WINDOW,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
)
from uploadsvc.web.streaming.h2fixes import H2ConnectionFixes
from uploadsvc.web.streaming.headerblock import HeaderBlockMeter


class GuardedH2Connection(H2ConnectionFixes):
    """
    Twisted's HTTP/2 connection with bounded cost for a client that does
    not play along:

      - each header block is measured as it arrives (L{HeaderBlockMeter})
        and the decoded field list is capped (C{SETTINGS_MAX_HEADER_LIST_SIZE},
        enforced from the start, not only once the client acknowledged it);
        a block over the bound closes the connection (C{ENHANCE_YOUR_CALM}:
        a block that is not decoded leaves the HPACK state unusable), a
        request with more than L{maxHeaderFields} fields is answered C{431};
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

    #: Whether the frames being handled made progress (see L{resetTimeout}).
    _progress = False
    _handlingFrames = False
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

    # -- refusing -------------------------------------------------------------

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
