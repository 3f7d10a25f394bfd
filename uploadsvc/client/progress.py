"""
What the user sees: a bar per file being sent and one for the whole run
(tqdm), each retry and resume as a line above the bars, and a summary at the
end.
"""

from __future__ import annotations

from typing import IO, Sequence

from tqdm import tqdm
from zope.interface import implementer

from uploadsvc.client.observer import IUploadObserver
from uploadsvc.client.jobs import UploadJob, UploadResult


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@implementer(IUploadObserver)
class ProgressDisplay:
    """
    tqdm bars: the overall one on top, then one per file in flight.
    """

    def __init__(self, totalBytes: int, files: int, stream: IO[str]) -> None:
        """
        @param totalBytes: the size of all files, for the overall bar.
        @param files: how many files there are.
        @param stream: where the bars go (a terminal, normally stderr).
        """
        self._stream = stream
        self._files = files
        self._done = 0
        self._overall = tqdm(
            total=totalBytes,
            desc=f"all (0/{files})",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=0,
            file=stream,
            dynamic_ncols=True,
            leave=True,
        )
        self._bars: dict[UploadJob, tqdm] = {}
        self._positions: dict[UploadJob, int] = {}
        self._freeSlots: list[int] = []
        self._nextSlot = 1

    def _slot(self) -> int:
        if self._freeSlots:
            return self._freeSlots.pop(0)
        slot = self._nextSlot
        self._nextSlot += 1
        return slot

    def started(self, job: UploadJob, size: int) -> None:
        name = job.label if len(job.label) <= 30 else "…" + job.label[-29:]
        bar = tqdm(
            total=size,
            desc=name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=self._slot(),
            file=self._stream,
            dynamic_ncols=True,
            leave=False,
        )
        self._bars[job] = bar
        self._positions[job] = 0

    def progress(self, job: UploadJob, position: int) -> None:
        bar = self._bars.get(job)
        if bar is None:
            return
        delta = position - self._positions[job]
        if delta:
            self._positions[job] = position
            bar.update(delta)
            self._overall.update(delta)

    def retrying(self, job: UploadJob, reason: str, delay: float, failures: int) -> None:
        self._overall.write(
            f"{job.label}: {reason}; retrying in {delay:.1f} s (attempt {failures + 1})",
            file=self._stream,
        )

    def resumed(self, job: UploadJob, offset: int) -> None:
        self._overall.write(f"{job.label}: resuming at {_bytes(offset)}", file=self._stream)
        self.progress(job, offset)

    def finished(self, result: UploadResult) -> None:
        job = result.job
        bar = self._bars.pop(job, None)
        position = self._positions.pop(job, 0)
        if bar is not None:
            # Whatever was sent, the file's share of the total is now done
            # (or given up on).
            self._overall.update(max(result.size, 0) - position)
            self._freeSlots.append(bar.pos if bar.pos > 0 else abs(bar.pos))
            bar.close()
        self._done += 1
        self._overall.set_description(f"all ({self._done}/{self._files})")
        mark = "done" if result.ok else "FAILED"
        detail = "" if result.ok else f": {result.error}"
        self._overall.write(f"{mark} {job.label}{detail}", file=self._stream)

    def close(self) -> None:
        """
        Remove the bars.
        """
        for bar in self._bars.values():
            bar.close()
        self._overall.close()


def formatSummary(
    results: Sequence[UploadResult],
    skipped: Sequence[tuple[str, str]] = (),
    elapsed: float | None = None,
) -> str:
    """
    The end-of-run summary: one line per file that failed or was skipped,
    and the totals.
    """
    lines = []
    for r in results:
        if not r.ok:
            lines.append(f"FAILED  {r.job.label}: {r.error}")
    for path, reason in skipped:
        lines.append(f"skipped {path}: {reason}")
    ok = [r for r in results if r.ok]
    payload = sum(r.size for r in ok)
    sent = sum(r.bytesSent for r in results)
    resumes = sum(r.resumes for r in results)
    total = f"{len(ok)} of {len(results)} files uploaded ({_bytes(payload)}"
    total += f", {_bytes(sent)} sent, {resumes} resumes"
    if elapsed is not None:
        total += f", {elapsed:.1f} s"
    total += ")"
    lines.append(total)
    return "\n".join(lines)


@implementer(IUploadObserver)
class LineDisplay:
    """
    For output that is not a terminal (a log file, CI): one line per retry,
    resume and finished file, no bars.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def started(self, job: UploadJob, size: int) -> None:
        pass

    def progress(self, job: UploadJob, position: int) -> None:
        pass

    def retrying(self, job: UploadJob, reason: str, delay: float, failures: int) -> None:
        self._line(f"{job.label}: {reason}; retrying in {delay:.1f} s (attempt {failures + 1})")

    def resumed(self, job: UploadJob, offset: int) -> None:
        self._line(f"{job.label}: resuming at {_bytes(offset)}")

    def finished(self, result: UploadResult) -> None:
        if result.ok:
            self._line(f"done {result.job.label} ({_bytes(result.size)}, {result.resumes} resumes)")
        else:
            self._line(f"FAILED {result.job.label}: {result.error}")

    def close(self) -> None:
        pass
