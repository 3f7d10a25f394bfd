"""
The zero-copy body path: the rest of a plain HTTP/1.1 C{Content-Length}
body moves socket → pipe → staged file with C{splice(2)}, its bytes never
entering Python (C{--zero-copy auto}, the default).

Which bodies take it is decided by L{zerocopyplan} (pure); everything else
takes the ordinary path (Twisted reads, the parser decodes, the receiver
gets bytes). Bytes that arrived with the headers always go the ordinary way
first.

The glue, all of it twisted.web and twisted.internet internals:

  - the connection's own C{doRead} is replaced, for the rest of the body,
    by L{BodySplicer.doRead} (one reader per descriptor: the reactor keeps
    one selectable per descriptor, so a second reader could not be
    registered beside the transport, which may be writing). Pausing and
    resuming the channel's transport therefore pause and resume splicing,
    and the body gate's pauses (the sink's high-water mark, the idle
    timeout suspended while the server is the slow side) hold unchanged;
  - each splice moves what the socket has (up to what the body and the
    pipe have room for) into the pipe, resets the idle timeout, keeps the
    parser's count of the body (C{_IdentityTransferDecoder.contentLength})
    in step, and gives the bytes by count to the sink's write lane
    (L{uploadsvc.sink.FileSink.acceptSpliced}), which splices them into the
    file on the disk pool and then has the digest lane hash them from the
    page cache;
  - a full pipe (the disk is behind) stops reading until the write lane
    drains it, so a slow disk still slows the sender;
  - at the body's last byte the transport gets its C{doRead} back and the
    parser is told the body ended (an empty chunk at a count of zero, as
    its own last chunk would), so the request ends, and the next request on
    the connection is read, exactly as on the ordinary path. A connection
    lost mid-body ends the same way as on the ordinary path (the channel's
    C{connectionLost}); what reached the pipe is still written.
"""

from __future__ import annotations

import fcntl
import os
import resource
import select
import time
from typing import Any

from twisted.internet import main, tcp
from twisted.logger import Logger
from twisted.web.http import _IdentityTransferDecoder

from uploadsvc.web.streaming.zerocopyplan import (
    MAX_PUMPS,
    PIPE_SIZE,
    PUMP_IDLE,
    PUMP_SLICE,
    fallbackReason,
    hashBehind,
    nextSpliceSize,
    pipeBudget,
    pumpHashBatch,
    pumpKeepsOn,
    pumpLimit,
    pumpStep,
    shouldPump,
)

log = Logger()

#: The most bytes spliced in one turn of the reactor (other connections
#: wait meanwhile), handed to the sink as one batch.
MAX_PER_READ = 1024 * 1024

_SOCKET_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class Stats:
    """
    What this process spliced, for logs and tests.

    @ivar bodies: request bodies that took the zero-copy path.
    @ivar bytes: body bytes spliced.
    @ivar pumped: bodies (or stretches of one) moved by a L{Pump}.
    """

    bodies = 0
    bytes = 0
    pumped = 0


STATS = Stats()


class PipeBudget:
    """
    Counts the body pipes open in this process against
    L{zerocopyplan.pipeBudget}: a body that would pass it is read by Python,
    which needs no descriptor beyond those every upload holds.

    @ivar limit: how many pipes may be open at once.
    @ivar open: how many are.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def room(self) -> bool:
        return self.open < self.limit


def _processBudget() -> PipeBudget:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return PipeBudget(pipeBudget(soft if soft != resource.RLIM_INFINITY else 1 << 20))


#: The budget of this process, read once from its descriptor limit.
PIPES = _processBudget()

#: The pumps that may run at once in this process (L{Pump}): see
#: L{setDiskThreads}; a channel's C{pumpBudget} replaces it (tests).
PUMPS = PipeBudget(MAX_PUMPS)


def setDiskThreads(count: int) -> None:
    """
    The disk pool of this process has C{count} threads: as many pumps may
    run as L{zerocopyplan.pumpLimit} leaves room for (none with few).
    """
    PUMPS.limit = pumpLimit(count)


def startSplicing(request: Any, receiver: Any) -> BodySplicer | None:
    """
    Take the zero-copy path for the rest of C{request}'s body if it may
    (see L{zerocopyplan.fallbackReason}, L{zerocopyplan.receiverReason}).
    Call once the receiver has the bytes that came with the headers and
    before reading resumes.

    @param receiver: the body's receiver; it takes part through its
        C{spliceSink(remaining)} (an L{uploadsvc.web.receiver.UploadReceiver}).
    @return: the splicer now reading the body, or L{None}: the ordinary path.
    """
    channel = getattr(request, "channel", None)
    if channel is None or getattr(request, "_http2", None) is not None:
        return None
    mode = getattr(channel, "zeroCopy", "off")
    decoder = getattr(channel, "_transferDecoder", None)
    remaining = (
        # (Bytes the line parser holds still go to the decoder, and to the
        # receiver as bytes, before the splicer reads: when the resource
        # accepted the body from within the header's own read.)
        max(0, decoder.contentLength - len(getattr(channel, "_buffer", b"")))
        if isinstance(decoder, _IdentityTransferDecoder) and decoder.contentLength is not None
        else None
    )
    transport = channel.transport
    plain = (
        isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and getattr(transport, "connected", False)
    )
    offer = getattr(receiver, "spliceSink", None)
    target = getattr(getattr(receiver, "sink", None), "spliceTarget", None)
    if offer is None or target is None:
        return None
    budget = getattr(channel, "pipeBudget", None) or PIPES
    if fallbackReason(mode, True, remaining, plain, target.spliceable(), budget.room()) is not None:
        return None
    try:
        pipe = (getattr(channel, "makePipe", None) or Pipe)(budget)
    except OSError as e:  # (no descriptor left for a pipe: EMFILE, ENFILE)
        log.warn("zero-copy: no pipe for a body ({error}); it is read by Python", error=e)
        return None
    sink = offer(remaining)  # (remaining is an int here: fallbackReason checked)
    if sink is None:
        pipe.close(None)
        return None
    splicer = BodySplicer(channel, transport, decoder, sink, pipe)
    splicer.start()
    return splicer


class Pipe:
    """
    The pipe one body goes through: non-blocking, as large as the system
    lets an unprivileged process make it (up to L{PIPE_SIZE}).

    @ivar size: its capacity in bytes.
    """

    def __init__(self, budget: PipeBudget) -> None:
        self.readFd, self.writeFd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._budget: PipeBudget | None = budget
        budget.open += 1
        try:
            self.size: int = fcntl.fcntl(self.writeFd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # (over the user's pipe-buffer allowance)
            self.size = fcntl.fcntl(self.writeFd, fcntl.F_GETPIPE_SZ)

    def close(self, result: object) -> None:
        if self._budget is not None:
            self._budget.open -= 1
            self._budget = None
        for fd in (self.readFd, self.writeFd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.readFd = self.writeFd = -1


class BodySplicer:
    """
    Reads the rest of one body with splice(2) in place of the transport's
    C{doRead}; see the module docstring.

    @ivar spliced: body bytes moved into the pipe so far.
    """

    def __init__(self, channel: Any, transport: Any, decoder: Any, sink: Any, pipe: Pipe) -> None:
        self._channel = channel
        self._transport = transport
        self._decoder = decoder
        self._sink = sink
        self.spliced = 0
        self._socketFd = transport.fileno()
        self.pipe = pipe
        self._pipeR, self._pipeW, self._pipeSize = pipe.readFd, pipe.writeFd, pipe.size
        self._intoPipe = 0  # counted on the reactor thread
        self._outOfPipe = 0  # counted on the write lane's thread
        self._waitingForPipe = False
        self._stopped = False
        self._pumps: PipeBudget = getattr(channel, "pumpBudget", None) or PUMPS
        #: The pump's clock for its slices (a channel's C{pumpClock}: tests).
        self.clock = getattr(channel, "pumpClock", None) or time.monotonic
        #: The pump moving this body now, if any.
        self.pump: Pump | None = None

    def start(self) -> None:
        """
        Read the connection with splice(2) from now on.
        """
        self._channel._splicer = self
        self._transport.doRead = self.doRead
        STATS.bodies += 1
        if STATS.bodies == 1:
            log.info("zero-copy: request bodies are spliced socket -> pipe -> file")

    def doRead(self) -> Any:
        """
        The socket is readable: splice what it has into the pipe, up to
        L{MAX_PER_READ} bytes in this turn of the reactor, and hand them to
        the sink as one batch (each batch costs the disk pool a job).
        """
        if self._stopped:
            return None
        remaining = self._decoder.contentLength  # (the parser's count: the one truth)
        moved = 0
        why: Any = None
        while moved < MAX_PER_READ:
            want = nextSpliceSize(
                min(remaining - moved, MAX_PER_READ - moved),
                self._intoPipe + moved - self._outOfPipe,
                self._pipeSize,
            )
            if not want:
                break
            try:
                got = os.splice(self._socketFd, self._pipeW, want, flags=_SOCKET_FLAGS)
            except BlockingIOError:
                break  # the socket is empty, or the pipe full by its page count
            except OSError:
                why = main.CONNECTION_LOST
                break
            if not got:
                why = main.CONNECTION_DONE
                break
            moved += got
            if got < want:
                break  # (the socket is empty now: no second call to hear so)
        if moved:
            self._intoPipe += moved
            self.spliced += moved
            STATS.bytes += moved
            self._decoder.contentLength = remaining = remaining - moved
            self._channel.resetTimeout()
            self._sink.acceptSpliced(moved, self._pipeR, self._drained)
        if why is not None:
            return why
        if not remaining:
            self.stop()
            # The parser's own end of a body: the count is zero, so an empty
            # chunk finishes it (allContentReceived, then the next request).
            self._channel.rawDataReceived(b"")
        elif shouldPump(moved, remaining, self._pumps.room()) and self._startPump():
            pass
        elif self._intoPipe > self._outOfPipe and (
            not moved or self._intoPipe - self._outOfPipe >= self._pipeSize
        ):
            # Nothing fit, or the pipe is full by count: wait for the disk.
            self._waitForPipe()
        return None

    def _startPump(self) -> bool:
        """
        Hand the rest of the body to a L{Pump} on the write lane (after
        the batches the lane holds, which empty the pipe): the connection
        stops being read by the reactor (a body pause, which also holds the
        idle timeout: bytes are flowing, or the disk is the slow side) until
        the pump ends.

        @return: whether a pump took the body (no descriptor for its
            duplicate of the socket: the reactor goes on reading it).
        """
        # The pump's own reference to the socket: the transport may close
        # its descriptor (an abort) while the pump runs, and the number may
        # then name another connection's socket; this one cannot.
        try:
            fd = (getattr(self._channel, "dupSocket", None) or os.dup)(self._socketFd)
        except OSError:  # (no descriptor left: EMFILE) the reactor reads on
            return False
        self._pumps.open += 1
        STATS.pumped += 1
        if STATS.pumped == 1:
            log.info("zero-copy: a fast sender's body is moved by a disk thread (pump)")
        self._channel._pauseBody("pump")
        self.pump = pump = Pump(self, fd, self._decoder.contentLength)
        self._sink.acceptPump(pump)
        return True

    def pumpShouldStop(self) -> bool:
        """
        Any thread: whether a pump must stop before its next step: the
        body ended or its connection is going away (abort, takeover,
        close), the sink failed, or something else paused the body.
        """
        channel, transport = self._channel, self._transport
        return bool(
            self._stopped
            or getattr(channel, "_closing", False)
            or transport.disconnecting
            or transport.disconnected
            or getattr(transport, "_aborting", False)
            or self._sink.failure is not None
            or any(reason != "pump" for reason in channel._bodyPauses)
        )

    def _pumpEnded(self, moved: int) -> None:
        """
        On the reactor thread: the pump ended, having written C{moved}
        bytes of the body. Count them as the reactor's own splices would
        be, then read the connection in the reactor again (which sees an
        end, an error or the body's last byte as before).
        """
        self.pump = None
        self._pumps.open -= 1
        if moved:
            self.spliced += moved
            STATS.bytes += moved
            self._decoder.contentLength -= moved
        self._sink.acceptPumped(moved)
        if self._stopped:
            return
        self._channel.resetTimeout()
        self._channel._resumeBody("pump")
        if not self._decoder.contentLength:
            self.stop()
            self._channel.rawDataReceived(b"")

    def _waitForPipe(self) -> None:
        """
        Stop reading until the write lane has taken bytes out of the pipe.
        """
        self._waitingForPipe = True
        if self._outOfPipe == self._intoPipe:  # (drained meanwhile)
            self._waitingForPipe = False
            return
        self._channel._pauseBody("pipe")

    def _drained(self, count: int) -> None:
        """
        On the write lane's thread: C{count} bytes left the pipe.
        """
        self._outOfPipe += count
        if self._waitingForPipe:
            self._sink.runner.callFromThread(self._pipeDrained)

    def _pipeDrained(self) -> None:
        if self._waitingForPipe:
            self._waitingForPipe = False
            if not self._stopped:
                self._channel._resumeBody("pipe")

    def stop(self) -> None:
        """
        Give the connection's reading back to the transport (the body ended,
        or the connection is gone); the pipe is closed once the sink wrote
        what it holds.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._channel._splicer is self:
            self._channel._splicer = None
        if self._transport.__dict__.get("doRead") == self.doRead:
            del self._transport.doRead
        if self._waitingForPipe:
            self._waitingForPipe = False
            self._channel._resumeBody("pipe")
        self._sink.drain().addBoth(self.pipe.close)


class Pump:
    """
    Moves the rest of one body socket -> pipe -> file on a disk-pool thread
    (the body's write lane), step by step, as long as the sender keeps the
    socket busy: no reactor turn, write job or thread hop per batch. The
    digest lane gets the written ranges in batches (L{pumpHashBatch}).

    It stops before its next step when the body is done, when the
    connection goes away or is paused for another reason
    (L{BodySplicer.pumpShouldStop}), when the socket stays empty for
    L{PUMP_IDLE} seconds, when a slice of L{PUMP_SLICE} seconds moved too
    little (L{pumpKeepsOn}), or at an end or error of the socket (which the
    reactor then reads again and sees); it waits while the
    digest lane is a high-water mark behind (a wait that, too long, ends a
    slice with too little moved). Bytes that reached the pipe are always
    written.

    @ivar fd: its own duplicate of the socket's descriptor, closed when it
        ends; never the transport's.
    @ivar moved: body bytes written so far.
    """

    def __init__(self, splicer: BodySplicer, fd: int, remaining: int) -> None:
        self.splicer = splicer
        self.fd = fd
        self.remaining = remaining
        self.moved = 0
        self._ran = False

    def abandon(self) -> None:
        """
        Any thread: the write lane dropped this pump unrun (the sink failed
        first): let go of the socket and tell the reactor.
        """
        if not self._ran:
            self._ran = True
            os.close(self.fd)
            self.splicer._sink.runner.callFromThread(self.splicer._pumpEnded, 0)

    def run(self, sink: Any, target: Any) -> None:
        """
        The write lane's job (blocking); see the class docstring.
        """
        if self._ran:
            return
        self._ran = True
        splicer = self.splicer
        pipeR, pipeW = splicer.pipe.readFd, splicer.pipe.writeFd
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        hashStart = hashCount = 0
        batch = pumpHashBatch(sink._high)
        clock = splicer.clock
        sliceEnds = clock() + PUMP_SLICE
        sliceStart = 0
        try:
            while self.remaining and not splicer.pumpShouldStop():
                now = clock()
                if now >= sliceEnds:
                    if not pumpKeepsOn(self.moved - sliceStart):
                        # A trickling sender, or a digest lane with no
                        # thread to run on: the reactor reads the body.
                        break
                    sliceEnds, sliceStart = now + PUMP_SLICE, self.moved
                if hashBehind(sink.written, sink.written - sink.hashLag(), sink._high):
                    time.sleep(PUMP_IDLE / 10)  # (the digest lane catches up)
                    continue
                try:
                    got = os.splice(self.fd, pipeW, pumpStep(self.remaining), flags=_SOCKET_FLAGS)
                except BlockingIOError:
                    if poller.poll(PUMP_IDLE * 1000):
                        continue
                    break  # a pause: the reactor waits for the sender
                except OSError:
                    break  # (the reactor reads the socket again and sees why)
                if not got:
                    break  # the end of the stream: likewise
                try:
                    start = target.spliceIn(pipeR, got)
                finally:
                    self.moved += got
                    self.remaining -= got
                if hashCount and start != hashStart + hashCount:
                    sink.pumpWritten(hashStart, hashCount)
                    hashCount = 0
                if not hashCount:
                    hashStart = start
                hashCount += got
                if hashCount >= batch:
                    sink.pumpWritten(hashStart, hashCount)
                    hashCount = 0
        finally:
            if hashCount:
                sink.pumpWritten(hashStart, hashCount)
            os.close(self.fd)
            sink.runner.callFromThread(splicer._pumpEnded, self.moved)
