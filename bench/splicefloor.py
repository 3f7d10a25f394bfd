"""
The floor of each zero-copy receive pipeline shape on this machine (issue
13): how many MiB/s and receiver CPU-s/GiB one stream costs when it moves
socket -> pipe -> file with splice(2) and is hashed (sha-256) from the page
cache, for several shapes of the receive loop, without Twisted or HTTP.

A child process sends C{--size} bytes over loopback TCP with sendfile(2)
(a random source file sent over and over, like bench's load generator); the
receiver runs one shape; the file it wrote and the sha-256 it computed are
checked against the stream. CPU is the receiver process's own (user+system,
all its threads), never the sender's.

Shapes:
  - C{today}: a poll loop (the reactor) splices at most 1 MiB per turn into
    one 1 MiB pipe and queues the count to a write thread (pipe -> file),
    which queues the written range to a hash thread (coalesced); a full pipe
    makes the loop wait for the write thread (an eventfd, like
    callFromThread's waker);
  - C{pipes2}, C{pipes4}: the same with 2 or 4 pipes per body, so the loop
    fills one while the write thread drains another;
  - C{thread}: one thread loops poll(socket) -> splice socket -> pipe ->
    splice pipe -> file itself; the hash thread is handed ranges of at
    least C{--hash-job} bytes;
  - C{hash-*} variants of C{thread} pick how the hash reads the page cache:
    C{mmap} (faults 4 KiB at a time), C{populate} (MAP_POPULATE),
    C{madvise} (MADV_POPULATE_READ), C{read} (preadv into a reused buffer).

    .venv/bin/python -m bench.splicefloor --size 2048 today pipes2 thread
    .venv/bin/python -m bench.splicefloor --hash read thread
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import queue
import resource
import select
import socket
import sys
import tempfile
import threading
import time
from typing import Callable

MiB = 1024 * 1024
_MOVE_NB = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_MADV_POPULATE_READ = 22


def makeSource(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def expectedDigest(path: str, total: int) -> str:
    with open(path, "rb") as f:
        block = f.read()
    h = hashlib.sha256()
    done = 0
    while done < total:
        piece = block[: total - done] if total - done < len(block) else block
        h.update(piece)
        done += len(piece)
    return h.hexdigest()


def sender(port: int, path: str, total: int) -> None:
    """
    In a child process: send C{total} bytes of C{path}, repeated.
    """
    s = socket.create_connection(("127.0.0.1", port))
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    done = 0
    while done < total:
        offset = done % size
        n = os.sendfile(s.fileno(), fd, offset, min(size - offset, total - done))
        done += n
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    os._exit(0)


# -- hashing the page cache ---------------------------------------------------

def hashMmap(flags: int, advise: bool) -> Callable[[object, int, int, int], None]:
    def hashRange(h: object, fd: int, start: int, count: int) -> None:
        end = start + count
        while start < end:
            base = start - start % mmap.ALLOCATIONGRANULARITY
            length = min(end, start + 8 * MiB) - base
            m = mmap.mmap(fd, length, flags=flags, prot=mmap.PROT_READ, offset=base)
            if advise:
                m.madvise(_MADV_POPULATE_READ)
            with m:
                v = memoryview(m)
                h.update(v[start - base:])  # type: ignore[attr-defined]
                v.release()
            start = base + length
    return hashRange


def hashRead(span: int) -> Callable[[object, int, int, int], None]:
    buf = bytearray(span)
    view = memoryview(buf)

    def hashRange(h: object, fd: int, start: int, count: int) -> None:
        end = start + count
        while start < end:
            n = os.preadv(fd, [view[: min(span, end - start)]], start)
            if n <= 0:
                raise OSError("short read")
            h.update(view[:n])  # type: ignore[attr-defined]
            start += n
    return hashRange


HASHES = {
    "mmap": hashMmap(mmap.MAP_SHARED, False),
    "populate": hashMmap(mmap.MAP_SHARED | mmap.MAP_POPULATE, False),
    "madvise": hashMmap(mmap.MAP_SHARED, True),
    "read": hashRead(1 * MiB),
}


class HashLane:
    """
    A thread that hashes written ranges in order, coalescing adjacent ones
    into jobs of at least C{job} bytes (the last one may be smaller).
    """

    def __init__(self, fd: int, hashRange: Callable, job: int) -> None:
        self.fd, self.hashRange, self.job = fd, hashRange, job
        self.h = hashlib.sha256()
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.t = threading.Thread(target=self._run)
        self.t.start()
        self.jobs = 0

    def add(self, start: int, count: int) -> None:
        self.q.put((start, count))

    def finish(self) -> str:
        self.q.put(None)
        self.t.join()
        return self.h.hexdigest()

    def _run(self) -> None:
        start, pending, done = 0, 0, False
        while not done:
            item = self.q.get()
            if item is None:
                done = True
            else:
                pending += item[1]
                while pending < self.job:  # take what is queued already
                    try:
                        item = self.q.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                        break
                    pending += item[1]
                if pending < self.job and not done:
                    continue
            if pending:
                self.hashRange(self.h, self.fd, start, pending)
                self.jobs += 1
                start, pending = start + pending, 0


def newPipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    import fcntl
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MiB)
    return r, w


def spliceIntoFile(pipeR: int, fd: int, offset: int, count: int) -> None:
    end = offset + count
    while offset < end:
        moved = os.splice(pipeR, fd, end - offset, offset_dst=offset, flags=os.SPLICE_F_MOVE)
        if moved <= 0:
            raise OSError("pipe ran dry")
        offset += moved


# -- shapes ---------------------------------------------------------------

def reactorShape(sock: socket.socket, fd: int, total: int, lane: HashLane, npipes: int) -> int:
    """
    Today's shape (npipes=1) and its multi-pipe variant: a poll loop splices
    <= 1 MiB per turn; a write thread drains pipes in order and feeds the
    hash lane; an eventfd wakes the loop when a full pipe drained.
    """
    pipes = [newPipe() for _ in range(npipes)]
    inPipe = [0] * npipes
    lock = threading.Lock()
    wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    writes: queue.SimpleQueue = queue.SimpleQueue()
    state = {"waiting": False}

    def writer() -> None:
        offset = 0
        while True:
            item = writes.get()
            if item is None:
                return
            i, count = item
            spliceIntoFile(pipes[i][0], fd, offset, count)
            lane.add(offset, count)
            offset += count
            with lock:
                inPipe[i] -= count
                notify = state["waiting"]
                state["waiting"] = False
            if notify:
                os.eventfd_write(wake, 1)

    wt = threading.Thread(target=writer)
    wt.start()
    poller = select.poll()
    sfd = sock.fileno()
    poller.register(sfd, select.POLLIN)
    poller.register(wake, select.POLLIN)
    remaining, current, turns = total, 0, 0
    reading = True
    while remaining:
        for fdReady, _ in poller.poll():
            if fdReady == wake:
                os.eventfd_read(wake)
                reading = True
                poller.modify(sfd, select.POLLIN)
        if not reading:
            continue
        turns += 1
        moved = 0
        while moved < MiB and remaining:
            with lock:
                room = MiB - inPipe[current]
            if not room:
                break
            try:
                got = os.splice(sfd, pipes[current][1], min(room, remaining, MiB - moved), flags=_MOVE_NB)
            except BlockingIOError:
                break
            if not got:
                raise OSError("sender closed early")
            moved += got
            remaining -= got
            with lock:
                inPipe[current] += got
            writes.put((current, got))  # (the writer coalesces nothing: per splice)
        with lock:
            full = inPipe[current] >= MiB
            if full:
                nxt = (current + 1) % npipes
                if inPipe[nxt] < MiB and nxt != current:
                    current = nxt
                else:
                    state["waiting"] = True
                    reading = False
        if not reading:
            poller.modify(sfd, 0)
    writes.put(None)
    wt.join()
    for r, w in pipes:
        os.close(r), os.close(w)
    os.close(wake)
    return turns


def threadShape(sock: socket.socket, fd: int, total: int, lane: HashLane, npipes: int) -> int:
    """
    One thread per body: poll the socket, splice into the pipe, splice the
    pipe into the file, hand the range to the hash lane.
    """
    r, w = newPipe()
    sfd = sock.fileno()
    poller = select.poll()
    poller.register(sfd, select.POLLIN)
    offset, turns = 0, 0
    while offset < total:
        try:
            got = os.splice(sfd, w, min(MiB, total - offset), flags=_MOVE_NB)
        except BlockingIOError:
            poller.poll()
            continue
        if not got:
            raise OSError("sender closed early")
        turns += 1
        spliceIntoFile(r, fd, offset, got)
        lane.add(offset, got)
        offset += got
    os.close(r), os.close(w)
    return turns


SHAPES = {
    "today": lambda *a: reactorShape(*a, npipes=1),
    "pipes2": lambda *a: reactorShape(*a, npipes=2),
    "pipes4": lambda *a: reactorShape(*a, npipes=4),
    "thread": lambda *a: threadShape(*a, npipes=1),
}


def runOnce(shape: str, hashName: str, hashJob: int, total: int, source: str, expected: str, folder: str) -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        listener.close()
        sender(port, source, total)
    sock, _ = listener.accept()
    listener.close()
    sock.setblocking(False)
    fd, name = tempfile.mkstemp(dir=folder, prefix="splicefloor-")
    os.unlink(name)
    before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    lane = HashLane(fd, HASHES[hashName], hashJob)
    turns = SHAPES[shape](sock, fd, total, lane, )
    digest = lane.finish()
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    sock.setblocking(True)
    sock.sendall(b"k")
    sock.close()
    os.waitpid(pid, 0)
    size = os.fstat(fd).st_size
    os.close(fd)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = digest == expected and size == total
    gib = total / (1024 * MiB)
    return {
        "shape": shape, "hash": hashName, "hashJob": hashJob // MiB, "MiB/s": total / MiB / elapsed,
        "cpuPerGiB": cpu / gib, "user": (after.ru_utime - before.ru_utime) / gib,
        "sys": (after.ru_stime - before.ru_stime) / gib, "turns": turns, "hashJobs": lane.jobs,
        "ok": ok,
    }


def hashAlone(total: int, source: str) -> float:
    """
    CPU-s/GiB of hashlib sha-256 over bytes in memory: the floor of the
    hash lane.
    """
    with open(source, "rb") as f:
        block = f.read()
    h = hashlib.sha256()
    t0 = time.process_time()
    done = 0
    while done < total:
        h.update(block)
        done += len(block)
    return (time.process_time() - t0) / (done / (1024 * MiB))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", default=["today", "pipes2", "thread"], help=",".join(SHAPES))
    p.add_argument("--size", type=int, default=1024, help="MiB per stream (default 1024)")
    p.add_argument("--hash", default="mmap", help=",".join(HASHES) + " (comma-separated to try several)")
    p.add_argument("--hash-job", type=int, default=1, help="least MiB per hash job (default 1)")
    p.add_argument("-r", "--repeat", type=int, default=1)
    p.add_argument("--dir", default="bench/work", help="folder of the received file")
    a = p.parse_args(argv)
    os.makedirs(a.dir, exist_ok=True)
    source = os.path.join(a.dir, "splicefloor-source")
    makeSource(source, 64 * MiB)
    total = a.size * MiB
    expected = expectedDigest(source, total)
    print(f"sha-256 alone: {hashAlone(total, source):.2f} CPU-s/GiB", flush=True)
    print("| shape | hash | job MiB | MiB/s | CPU-s/GiB | user | sys | turns | hash jobs | ok |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _ in range(a.repeat):
        for shape in a.shapes:
            for hashName in a.hash.split(","):
                r = runOnce(shape, hashName, a.hash_job * MiB, total, source, expected, a.dir)
                print(
                    f"| {r['shape']} | {r['hash']} | {r['hashJob']} | {r['MiB/s']:.0f} | {r['cpuPerGiB']:.2f} "
                    f"| {r['user']:.2f} | {r['sys']:.2f} | {r['turns']} | {r['hashJobs']} | {r['ok']} |",
                    flush=True,
                )
                if not r["ok"]:
                    sys.exit("the stored stream or its sha-256 differs from what was sent")


if __name__ == "__main__":
    main()
