"""
How many durable small-file completions the disk under the work folder
allows: each one writes 64 KiB to a new file, fsyncs it, renames it into
place and fsyncs the folder, as a durable upload server must.  Measured with
one thread and with several at once (what batching fsyncs across concurrent
completions can reach), each for a bounded time and count.

    .venv/bin/python -m bench.fsyncrate [FOLDER]
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

_SIZE = 64 * 1024


def _complete(folder: Path, name: str, data: bytes) -> None:
    staging = folder / f".{name}.part"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(staging, folder / name)
    dirFd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirFd)
    finally:
        os.close(dirFd)


def measure(folder: Path, threads: int = 1, seconds: float = 2.0,
            limit: int = 5000) -> float:
    """
    Completions per second with C{threads} threads, over at most C{seconds}
    seconds and C{limit} completions.
    """
    probe = folder / f"fsync-probe-{threads}"
    if probe.exists():
        shutil.rmtree(probe)
    probe.mkdir(parents=True)
    data = os.urandom(_SIZE)
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def work(index: int) -> None:
        while time.monotonic() < deadline and counts[index] < limit // threads:
            _complete(probe, f"{index}-{counts[index]}", data)
            counts[index] += 1

    start = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - start
    shutil.rmtree(probe)
    return sum(counts) / elapsed


def describe(folder: Path) -> str:
    """
    One line for the report: the rates with 1 and 8 threads.
    """
    one = measure(folder, 1)
    eight = measure(folder, 8)
    return (
        f"{one:,.0f} durable 64 KiB completions/s with 1 thread, {eight:,.0f}/s "
        f"with 8 (write, fsync, rename, fsync folder)"
    )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "work"
    print(describe(target))
