"""
The cost of one round trip to the disk threads and back (issue 13's "a
lighter pool than Twisted's"): CPU per call of a call that does nothing,
through uploadsvc's L{DiskThreads} and through Twisted's C{ThreadPool} with
C{deferToThreadPool}, measured in the same run, in turns.

C{--callers} coroutines on the reactor each await C{--calls}/C{--callers}
calls in a row; both pools have C{--threads} threads. The figure is the
process's CPU (all threads) per call, and the ratio of ours to Twisted's.

    .venv/bin/python -m bench.pooltrip
    .venv/bin/python -m bench.pooltrip --callers 1 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from uploadsvc.runner import DiskThreads, ThreadRunner


def _nothing() -> int:
    return 0


@inlineCallbacks
def _measure(run: Callable[[], Deferred], calls: int, callers: int) -> Any:
    """
    CPU seconds per call of C{calls} calls of C{run}, C{callers} at a time.
    """

    @inlineCallbacks
    def caller(count: int) -> Any:
        for _ in range(count):
            yield run()

    began = time.process_time()
    yield gatherResults([caller(calls // callers) for _ in range(callers)])
    return (time.process_time() - began) / (calls // callers * callers)


@inlineCallbacks
def compare(reactor: Any, calls: int, callers: int, threads: int, rounds: int) -> Any:
    """
    Per pool, the CPU microseconds per call of each round (pools in turns).
    """
    ours = DiskThreads(threads, "pooltrip", reactor)
    ours.start()
    runner = ThreadRunner(reactor, ours)
    theirs = ThreadPool(threads, threads, "pooltrip-twisted")
    theirs.start()
    figures: dict[str, list[float]] = {"DiskThreads": [], "ThreadPool": []}
    try:
        for _ in range(rounds):
            spent = yield _measure(lambda: runner.run(_nothing), calls, callers)
            figures["DiskThreads"].append(spent * 1e6)
            spent = yield _measure(
                lambda: deferToThreadPool(reactor, theirs, _nothing), calls, callers
            )
            figures["ThreadPool"].append(spent * 1e6)
    finally:
        ours.stop()
        theirs.stop()
    return figures


def report(figures: dict[str, list[float]]) -> str:
    lines = []
    for name, values in figures.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"{name}: {statistics.median(values):.1f} us CPU per call (runs: {runs})")
    ratio = statistics.median(figures["DiskThreads"]) / statistics.median(figures["ThreadPool"])
    lines.append(f"DiskThreads / ThreadPool: {ratio:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    out: list[str] = []

    def done(figures: dict[str, list[float]]) -> None:
        out.append(report(figures))

    d = compare(reactor, args.calls, args.callers, args.threads, args.rounds)
    d.addCallback(done).addErrback(lambda f: out.append(f.getTraceback()))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    print(out[0])
    os._exit(0)  # (without waiting on anything a failed run left behind)


if __name__ == "__main__":
    main()
