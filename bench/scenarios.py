"""
The scenarios of issue 5, at full size and scaled down for C{--quick}, and
the figures each one reports.

  - S1: one 2 GiB stream.
  - S2: 32 concurrent uploads of 64 MiB.
  - S3: 500 slow clients (1 MiB each at 64 KiB/s) and 2 heavy hitters of
    1 GiB at full speed, all at once: slow clients should finish near their
    ideal 16 s, heavy hitters should not starve.
  - S4: 4000 uploads of 64 KiB, 64 at a time, on keep-alive connections.
  - S5: 1000 uploads that send their headers and 1 KiB, then trickle for
    20 s: the server's RSS per open upload.
  - S6: a disk slower than the network (the server's writes throttled by a
    bench-only option): memory stays bounded, every upload completes.
"""

from __future__ import annotations

import math
from typing import Sequence

import attr

from bench.loadgen import Load, Pacing, Upload

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@attr.s(auto_attribs=True, frozen=True)
class Column:
    """
    One figure shown in a scenario's table.

    @ivar key: the summary key.
    @ivar label: the column heading, with its unit.
    @ivar scale: what the stored value is divided by for display.
    @ivar digits: decimals shown.
    @ivar higherIsBetter: the direction of a good ratio.
    @ivar durableKey: for the durable (fsync) uploadsvc, the baseline figure
        to compare with instead: the baselines do not fsync, so their
        throughput including a final C{sync} is the fair comparison.
    @ivar compared: whether the ratio table shows it (not for figures of
        the load generator itself).
    """

    key: str
    label: str
    scale: float = 1.0
    digits: int = 0
    higherIsBetter: bool = True
    durableKey: str | None = None
    compared: bool = True


_MIBPS = Column("mibps", "MiB/s", durableKey="mibpsSync")
_MIBPS_SYNC = Column("mibpsSync", "MiB/s incl. sync")
_CPU = Column("serverCpuPerGiB", "server CPU-s/GiB", digits=2, higherIsBetter=False)
_CLIENT_CPU = Column("clientCpuPerGiB", "client CPU-s/GiB", digits=2, higherIsBetter=False,
                     compared=False)
_PEAK = Column("peakRss", "peak RSS MiB", scale=MiB, digits=1, higherIsBetter=False)


def _latency(group: str, which: str, scale: float, unit: str, digits: int) -> Column:
    prefix = "" if group == "all" else f"{group} "
    return Column(
        f"latency.{group}.{which}",
        f"{prefix}{which} {unit}",
        scale=scale,
        digits=digits,
        higherIsBetter=False,
    )


@attr.s(auto_attribs=True, frozen=True)
class Scenario:
    """
    One scenario at one size.

    @ivar key: C{S1} .. C{S6}.
    @ivar title: what it is, with its sizes.
    @ivar load: the uploads and how they are sent.
    @ivar columns: the figures its table shows.
    @ivar slowDiskRate: bytes per second the server may write (S6 only).
    @ivar measureOpen: whether to report RSS per open upload (S5).
    @ivar sampleInterval: seconds between RSS samples.
    """

    key: str
    title: str
    load: Load
    columns: Sequence[Column]
    slowDiskRate: float | None = None
    measureOpen: bool = False
    sampleInterval: float = 0.1

    @property
    def largest(self) -> int:
        """
        The largest body, which the source file must hold.
        """
        return max(u.size for u in self.load.uploads)


def _offset(index: int, size: int, sourceSize: int) -> int:
    """
    A page-aligned source offset for the C{index}th upload of C{size} bytes,
    spread over the source so that uploads differ in content.
    """
    span = sourceSize - size
    if span <= 0:
        return 0
    return (index * (size + 4 * KiB) % span) // (4 * KiB) * (4 * KiB)


def _uploads(
    prefix: str, count: int, size: int, sourceSize: int,
    group: str = "all", pacing: Pacing | None = None, first: int = 0,
) -> list[Upload]:
    return [
        Upload(
            path=f"/{prefix}/{i // 100:03d}/{group}-{i:05d}.bin",
            offset=_offset(first + i, size, sourceSize),
            size=size,
            group=group,
            pacing=pacing,
        )
        for i in range(count)
    ]


@attr.s(auto_attribs=True, frozen=True)
class Sizes:
    """
    The knobs that differ between a full and a quick run.
    """

    s1: int
    s2Count: int
    s2Size: int
    s3Slow: int
    s3SlowSize: int
    s3Heavy: int
    s4Count: int
    s5Count: int
    s5Trickle: float
    s6Count: int
    s6Size: int
    s6Rate: float


FULL = Sizes(
    s1=2 * GiB, s2Count=32, s2Size=64 * MiB, s3Slow=500, s3SlowSize=1 * MiB,
    s3Heavy=1 * GiB, s4Count=4000, s5Count=1000, s5Trickle=20.0,
    s6Count=8, s6Size=256 * MiB, s6Rate=64 * MiB,
)
QUICK = Sizes(
    s1=256 * MiB, s2Count=8, s2Size=32 * MiB, s3Slow=100, s3SlowSize=256 * KiB,
    s3Heavy=256 * MiB, s4Count=1000, s5Count=200, s5Trickle=5.0,
    s6Count=4, s6Size=32 * MiB, s6Rate=64 * MiB,
)


def sourceSize(sizes: Sizes) -> int:
    """
    How large the source file must be for C{sizes}: the largest body and
    some room to vary the offsets.
    """
    return max(sizes.s1, sizes.s3Heavy, sizes.s2Size, sizes.s6Size) + 64 * MiB


def build(sizes: Sizes, source: int) -> dict[str, Scenario]:
    """
    Every scenario at C{sizes}, drawing bodies from a source of C{source}
    bytes.
    """
    slowRate = 64 * KiB
    slowIdeal = sizes.s3SlowSize / slowRate
    trickleStep = 16
    s5Size = KiB + int(sizes.s5Trickle) * trickleStep
    s6Total = sizes.s6Count * sizes.s6Size
    scenarios = [
        Scenario(
            "S1",
            f"one {sizes.s1 // MiB} MiB stream",
            Load(_uploads("s1", 1, sizes.s1, source), 1, False, timeLimit=300),
            [_MIBPS, _MIBPS_SYNC, _CPU, _CLIENT_CPU, _PEAK],
        ),
        Scenario(
            "S2",
            f"{sizes.s2Count} concurrent x {sizes.s2Size // MiB} MiB",
            Load(_uploads("s2", sizes.s2Count, sizes.s2Size, source),
                 sizes.s2Count, False, timeLimit=300),
            [_MIBPS, _MIBPS_SYNC, _CPU, _CLIENT_CPU,
             _latency("all", "p50", 1.0, "s", 2), _latency("all", "max", 1.0, "s", 2),
             _PEAK],
        ),
        Scenario(
            "S3",
            f"{sizes.s3Slow} slow clients ({sizes.s3SlowSize // KiB} KiB at "
            f"{slowRate // KiB} KiB/s, ideal {slowIdeal:g} s) + 2 heavy hitters of "
            f"{sizes.s3Heavy // MiB} MiB at full speed, all at once",
            Load(
                _uploads("s3", 2, sizes.s3Heavy, source, group="heavy")
                + _uploads("s3", sizes.s3Slow, sizes.s3SlowSize, source, group="slow",
                           pacing=Pacing(0, slowRate, 16 * KiB), first=2),
                2 + sizes.s3Slow, False, timeLimit=slowIdeal * 4 + 120,
            ),
            [_latency("slow", "p50", 1.0, "s", 2), _latency("slow", "p99", 1.0, "s", 2),
             _latency("slow", "max", 1.0, "s", 2),
             Column("heavyMibps", "heavy MiB/s (slowest)", durableKey="heavyMibpsSync"),
             _CPU, _PEAK],
        ),
        Scenario(
            "S4",
            f"{sizes.s4Count} uploads of 64 KiB, 64 at a time, keep-alive",
            Load(_uploads("s4", sizes.s4Count, 64 * KiB, source), 64, True, timeLimit=300),
            [Column("uploadsPerS", "uploads/s", durableKey="uploadsPerSSync"),
             _latency("all", "p50", 1e-3, "ms", 1), _latency("all", "p99", 1e-3, "ms", 1),
             _latency("all", "max", 1e-3, "ms", 1),
             Column("serverCpuPerUpload", "server CPU-ms/upload", scale=1e-3, digits=2,
                    higherIsBetter=False),
             _PEAK],
        ),
        Scenario(
            "S5",
            f"{sizes.s5Count} uploads open at once: headers + 1 KiB, then "
            f"{trickleStep} B/s for {sizes.s5Trickle:g} s",
            Load(
                _uploads("s5", sizes.s5Count, s5Size, source,
                         pacing=Pacing(KiB, float(trickleStep), trickleStep)),
                sizes.s5Count, False, timeLimit=sizes.s5Trickle * 3 + 60,
            ),
            [Column("rssPerOpen", "RSS per open upload KiB", scale=KiB, digits=1,
                    higherIsBetter=False),
             Column("rssBefore", "RSS idle MiB", scale=MiB, digits=1, higherIsBetter=False),
             Column("rssOpen", "RSS with all open MiB", scale=MiB, digits=1,
                    higherIsBetter=False),
             Column("serverCpu", "server CPU-s", digits=2, higherIsBetter=False)],
            measureOpen=True,
            sampleInterval=0.25,
        ),
        Scenario(
            "S6",
            f"disk slower than the network: {sizes.s6Count} x {sizes.s6Size // MiB} MiB "
            f"({s6Total // MiB} MiB) through a {sizes.s6Rate / MiB:g} MiB/s write throttle",
            Load(_uploads("s6", sizes.s6Count, sizes.s6Size, source),
                 sizes.s6Count, False, timeLimit=s6Total / sizes.s6Rate * 4 + 60),
            [_MIBPS, _PEAK,
             Column("rssGrowth", "peak − idle RSS MiB", scale=MiB, digits=1,
                    higherIsBetter=False),
             Column("hwm", "VmHWM MiB", scale=MiB, digits=1, higherIsBetter=False), _CPU],
            slowDiskRate=sizes.s6Rate,
        ),
    ]
    return {s.key: s for s in scenarios}


def percentile(values: Sequence[float], p: float) -> float:
    """
    The nearest-rank C{p}th percentile of C{values}, NaN when empty.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """
    The median of C{values}, NaN when empty.
    """
    present = sorted(v for v in values if not math.isnan(v))
    if not present:
        return math.nan
    middle = len(present) // 2
    if len(present) % 2:
        return present[middle]
    return (present[middle - 1] + present[middle]) / 2
