"""
The pure decisions of the zero-copy body path (L{uploadsvc.web.streaming.splice}):
whether a request body may move socket → pipe → file with C{splice(2)}
without entering Python, and how many bytes the next splice asks for.

No reactor, no descriptors: values in, a decision out.
"""

from __future__ import annotations

#: The values of C{--zero-copy}.
MODES = ("auto", "off")

#: Bodies with fewer bytes left than this (after what arrived with the
#: headers) take the ordinary path: a pipe and its set-up cost more system
#: calls than a few reads save.
MIN_SPLICED_BODY = 128 * 1024

#: The pipe's capacity asked for (C{F_SETPIPE_SZ}); 1 MiB is Linux's
#: default C{/proc/sys/fs/pipe-max-size}, so no privilege is needed.
PIPE_SIZE = 1024 * 1024

# Why a body takes the ordinary path (log and test vocabulary).
OFF = "off"
NOT_HTTP1 = "not-http/1.1"
NO_LENGTH = "no-content-length"
NOT_PLAIN_SOCKET = "not-a-plain-socket"
SMALL = "small-body"
RECEIVER = "receiver-needs-the-bytes"
UNSUPPORTED = "splice-unsupported"
NO_PIPE_ROOM = "pipe-budget-spent"

#: At most this share of the process's descriptor limit goes to body pipes
#: (two descriptors each): the rest stays for what every upload needs on
#: either path (its socket, staged file and lock), so splicing never makes
#: the server refuse an upload it could have taken by reading it in Python.
PIPE_SHARE = 8


def pipeBudget(descriptorLimit: int) -> int:
    """
    How many body pipes may be open at once under a soft C{RLIMIT_NOFILE}
    of C{descriptorLimit}: a L{PIPE_SHARE}th of the descriptors, two per
    pipe.
    """
    return max(0, descriptorLimit // PIPE_SHARE // 2)


def fallbackReason(
    mode: str,
    http1: bool,
    remaining: int | None,
    plainSocket: bool,
    spliceable: bool,
    pipeRoom: bool = True,
) -> str | None:
    """
    Why the rest of a body must go through Python, or L{None} when it may be
    spliced.

    @param mode: C{--zero-copy}.
    @param http1: whether the request came over HTTP/1.1 (not HTTP/2).
    @param remaining: body bytes not received yet by a C{Content-Length}
        body; L{None} for a chunked body (its framing must be parsed).
    @param plainSocket: whether the connection is a TCP or UNIX socket with
        no TLS (or other byte-changing) layer above it.
    @param spliceable: whether splice(2) works here (the system has it and
        the staged file's file system took it before).
    @param pipeRoom: whether one more pipe fits the L{pipeBudget}.
    """
    if mode == OFF:
        return OFF
    if not http1:
        return NOT_HTTP1
    if remaining is None:
        return NO_LENGTH
    if not plainSocket:
        return NOT_PLAIN_SOCKET
    if not spliceable:
        return UNSUPPORTED
    if remaining < MIN_SPLICED_BODY:
        return SMALL
    if not pipeRoom:
        return NO_PIPE_ROOM
    return None


def receiverReason(skipPending: int, take: int | None, remaining: int) -> str | None:
    """
    Why the body's receiver must see the rest of the body as bytes: an
    overlap still to drop (it is skipped by position in Python), or a body
    longer than the receiver may keep (it must fail at the exact byte).

    @param skipPending: leading bytes the receiver still drops.
    @param take: bytes it may still keep (L{None}: no bound).
    @param remaining: bytes of the body still to come.
    """
    if skipPending:
        return RECEIVER
    if take is not None and take < remaining:
        return RECEIVER
    return None


def nextSpliceSize(remaining: int, inPipe: int, pipeSize: int) -> int:
    """
    How many bytes the next socket → pipe splice asks for: never past the
    body (what follows is the next request's), never more than the pipe has
    room for by count.

    @param remaining: body bytes still to come.
    @param inPipe: bytes spliced into the pipe and not yet out to the file.
    @param pipeSize: the pipe's capacity.
    """
    return max(0, min(remaining, pipeSize - inPipe))


# -- the pump: one disk-pool thread moves a fast sender's body ----------------

#: A turn of the reactor that spliced at least this many bytes marks a fast
#: sender (the socket had that much queued): the rest of its body is moved
#: by a pump, a disk-pool thread that loops socket -> pipe -> file itself,
#: instead of one reactor turn, one write job and one thread hop per batch.
#: A slow client (a few kilobytes per read) never reaches it.
PUMP_AFTER = 64 * 1024

#: Pumps at once in one process: each holds a disk-pool thread for as long
#: as its sender keeps the socket busy.
MAX_PUMPS = 2

#: Seconds a pump waits for the socket before handing it back to the
#: reactor (where the idle timeout and every other connection are): short,
#: so that a sender that pauses costs a thread no longer than this.
PUMP_IDLE = 0.01

#: Most bytes one pump step moves (socket -> pipe, then pipe -> file): the
#: pipe's capacity.
PUMP_STEP = PIPE_SIZE

#: Most written bytes a pump gathers before handing their range to the
#: digest lane: fewer, larger hash jobs (see L{pumpHashBatch}).
PUMP_HASH_BATCH = 4 * 1024 * 1024


#: Seconds of one pump's slice: at the end of each, a pump that moved less
#: than L{PUMP_SLICE_FLOOR} bytes in it hands the body back to the reactor.
PUMP_SLICE = 0.25

#: Bytes a pump must move in a slice to keep its thread (4 MiB/s): a sender
#: that bursts once and then trickles a byte every few milliseconds must not
#: hold a disk thread for as long as it likes, nor a pump that waits for a
#: digest lane with no thread to run on (the outside test's F2 and F1).
PUMP_SLICE_FLOOR = 1024 * 1024


def pumpLimit(diskThreads: int) -> int:
    """
    How many pumps may run at once beside a disk pool of C{diskThreads}:
    each holds a thread and its digest lane another, and two threads are
    always left for every other upload (none with 3 threads or fewer).
    """
    return max(0, min(MAX_PUMPS, (diskThreads - 2) // 2))


def pumpKeepsOn(movedInSlice: int) -> bool:
    """
    Whether a pump goes on after a slice (L{PUMP_SLICE}) in which it moved
    C{movedInSlice} bytes: only a sender still fast enough to be worth a
    thread (L{PUMP_SLICE_FLOOR}).
    """
    return movedInSlice >= PUMP_SLICE_FLOOR


def shouldPump(moved: int, remaining: int, pumpRoom: bool) -> bool:
    """
    Whether the rest of a body goes to a pump after a reactor turn that
    spliced C{moved} bytes, with C{remaining} still to come.

    @param pumpRoom: whether fewer than L{MAX_PUMPS} pumps run.
    """
    return pumpRoom and remaining > 0 and moved >= PUMP_AFTER


def hashBehind(written: int, hashed: int, highWater: int) -> bool:
    """
    Whether a pump waits for the digest lane before its next step: the
    bytes written and not yet hashed reached the sink's high-water mark
    (the digest must not fall ever further behind a fast disk).
    """
    return written - hashed >= highWater


def pumpHashBatch(highWater: int) -> int:
    """
    How many written bytes a pump gathers before handing their range to the
    digest lane, under a sink's C{highWater}: a quarter of the mark (at most
    L{PUMP_HASH_BATCH}, at least one pipe), so that several batches fit
    under it and the pump goes on writing while one is hashed; a batch as
    large as the mark would make the pump wait for each (L{hashBehind})
    and the two would take turns instead of overlapping.
    """
    return max(PUMP_STEP, min(PUMP_HASH_BATCH, highWater // 4))


def pumpStep(remaining: int) -> int:
    """
    How many bytes a pump's next socket -> pipe splice asks for: never past
    the body, never more than the pipe holds (it is empty between steps).
    """
    return max(0, min(remaining, PUMP_STEP))
