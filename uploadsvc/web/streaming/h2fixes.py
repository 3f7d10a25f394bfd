"""
What Twisted's C{H2Connection} does not do on its own, below the streaming
and the bounds on hostile clients: a send loop that never spins on a
stream without window, and a connection that, once over, reads nothing
more and goes away.
"""

from __future__ import annotations

from typing import Any

from h2.events import WindowUpdated
from h2.frame_buffer import FrameBuffer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection

from uploadsvc.web.streaming.constants import CLOSE_GRACE


class H2ConnectionFixes(H2Connection):  # type: ignore[misc]
    """
    Twisted's HTTP/2 connection with its send loop and its closing fixed:

      - a stream whose response data has no flow-control window is blocked
        instead of being picked again and again (see
        L{_sendPrioritisedData}); only a pass that sent something is
        progress;
      - a stream C{h2} has closed (the client reset it) but Twisted still
        holds (the reset is later in the frames being handled) is never
        picked: C{send_data} would raise, and Twisted's loop, which does not
        reschedule itself after an exception, would send nothing more on
        the connection;
      - a window opened by the client wakes a sleeping send loop only once
        the frames read with it have all been handled (L{_wakeSendLoop});
      - after a protocol error, a GOAWAY from either side or a timeout, the
        connection reads nothing more, drops what C{h2} buffered, and is
        aborted if it has not gone within L{closeGrace} seconds (Twisted
        would keep buffering every frame the client still sends, and over
        TLS the connection would never close).

    @cvar closeGrace: see L{CLOSE_GRACE}.
    """

    closeGrace: float | None = CLOSE_GRACE

    _closing = False
    _graceCall: Any = None
    #: The pending wake of the send loop (see L{_wakeSendLoop}).
    _wakeCall: Any = None
    #: Whether the frames of one read are being handled.
    _readingFrames = False
    #: Whether a pass of the send loop runs (see L{_sendPrioritisedData}).
    _sendingPass = False

    # -- reading --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._readingFrames = True
        try:
            super().dataReceived(data)
        finally:
            self._readingFrames = False

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
        if self._stillProducing:
            self._blockClosedStreams()
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

    def _blockClosedStreams(self) -> None:
        """
        Never pick a stream that C{h2} has closed while Twisted still holds
        it. While frames are handled, the client reset it in one of them:
        the stream is blocked, and Twisted lets go of it when it reaches
        that reset. Otherwise no reset will come: the stream is let go of
        here, as after a reset.
        """
        for streamID in list(self._outboundStreamQueues):
            if not self._closedByH2(streamID):
                continue
            if self._readingFrames:
                self.priority.block(streamID)
            else:
                self.streams[streamID].connectionLost(
                    Failure(ConnectionLost("the stream was closed"))
                )
                self._requestDone(streamID)

    def _closedByH2(self, streamID: int) -> bool:
        h2stream = self.conn.streams.get(streamID)
        return h2stream is None or bool(h2stream.closed)

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
                and not self._closedByH2(streamID)
                and self.conn.local_flow_control_window(streamID) <= 0
            ):
                self.priority.block(streamID)

    def _handleWindowUpdate(self, event: Any) -> None:
        """
        Window opened: Twisted unblocks the streams that have data waiting,
        but leaves a send loop that found nothing to send asleep.
        """
        super()._handleWindowUpdate(event)
        if self._wakeCall is None and self._stillProducing:
            self._wakeCall = self._reactor.callLater(0, self._wakeSendLoop)

    def _wakeSendLoop(self) -> None:
        """
        Restart a send loop that sleeps, once the frames that opened the
        window have all been handled: woken in their midst, it could pick a
        stream that a later frame of the same read reset.
        """
        self._wakeCall = None
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
            for name in ("_graceCall", "_wakeCall"):
                call = getattr(self, name)
                setattr(self, name, None)
                if call is not None and call.active():
                    call.cancel()
