"""
Issue 13's targets, set against the figures of one bench run: the closing
section of L{bench.report}, so that a regenerated C{bench/RESULTS.md} tells
which targets the run meets and by how much it misses the others, with
every figure taken from the results file.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import attr

from bench.scenarios import Column, Scenario, median

HEADING = "## Issue 13's targets against this run"
#: The server every ratio is taken against.
BASELINE = "aiohttp"
#: The durable server whose completions/s are set against the disk's rate.
DURABLE = "uploadsvc-fsync"
#: The share of the disk's own fsync rate (with 8 threads) that S4 with
#: fsync on should reach.
DISK_SHARE = 0.8

#: The disk's rates in the header line of L{bench.fsyncrate.describe}.
_DISK_RATES = re.compile(
    r"([\d,.]+) durable 64 KiB completions/s with 1 thread, ([\d,.]+)/s with 8"
)


@attr.s(auto_attribs=True, frozen=True)
class Target:
    """
    One target of issue 13.

    @ivar scenario: C{S1} .. C{S5}.
    @ivar key: the summary figure it is about.
    @ivar what: how the target column names the figure.
    @ivar unit: the figure's unit, as shown after its value.
    @ivar bound: the ratio to L{BASELINE} (or, when not C{relative}, the
        value in C{unit}) to reach; C{None}: the figure is only reported.
    @ivar atLeast: whether the figure must be at least (or at most)
        C{bound}.
    @ivar server: the uploadsvc server measured.
    @ivar relative: whether C{bound} is a ratio to L{BASELINE}.
    @ivar stretch: a further bound, in the same direction.
    """

    scenario: str
    key: str
    what: str
    unit: str
    bound: float | None
    atLeast: bool = True
    server: str = "uploadsvc"
    relative: bool = True
    stretch: float | None = None

    @property
    def label(self) -> str:
        """
        The target column's cell.
        """
        where = self.scenario + ("" if self.server == "uploadsvc" else f" (`{self.server}`)")
        if self.bound is None:
            return f"{where}: {self.what}"
        sign = "≥" if self.atLeast else "≤"
        text = f"{where}: {self.what} {sign} {_bound(self.bound, self)}"
        if self.stretch is not None:
            text += f" (stretch {sign} {_bound(self.stretch, self)})"
        return text


def _bound(value: float, target: Target) -> str:
    return f"{value:.1f}x" if target.relative else f"{value:g} {target.unit}"


TARGETS = (
    Target("S1", "mibps", "MiB/s", "MiB/s", 1.2),
    Target("S1", "serverCpuPerGiB", "server CPU-s/GiB", "CPU-s/GiB", 0.8, atLeast=False,
           stretch=0.6),
    Target("S2", "mibps", "MiB/s", "MiB/s", 1.3, server="uploadsvc-w2"),
    Target("S2", "serverCpuPerGiB", "server CPU-s/GiB", "CPU-s/GiB", 1.0, atLeast=False,
           server="uploadsvc-w2"),
    Target("S3", "heavyMibps", "heavy hitters' MiB/s (slowest)", "MiB/s", 1.0),
    Target("S3", "latency.slow.p99", "slow clients' p99", "s", 17.0, atLeast=False,
           relative=False),
    Target("S3", "serverCpuPerGiB", "server CPU-s/GiB", "CPU-s/GiB", 1.0, atLeast=False),
    Target("S4", "uploadsPerS", "uploads/s", "/s", 1.2, server="uploadsvc-w2"),
    Target("S4", "latency.all.p99", "p99", "ms", 1.0, atLeast=False, server="uploadsvc-w2"),
    # Stands in the table for the fsync row, which L{_diskRow} renders.
    Target("S4", "uploadsPerS", "completions/s", "/s", DISK_SHARE, server=DURABLE),
    Target("S5", "rssPerOpen", "RSS per open upload", "KiB", 10.0, atLeast=False,
           relative=False),
    Target("S5", "rssBefore", "idle RSS", "MiB", None),
)


def diskRates(meta: dict[str, Any]) -> tuple[float, float] | None:
    """
    The disk's durable small completions per second with 1 and with 8
    threads, as this run measured them (L{bench.fsyncrate}), or C{None}
    when the results file does not hold them.
    """
    found = _DISK_RATES.search(str(meta["machine"].get("disk (work folder)", "")))
    if found is None:
        return None
    one, eight = (float(rate.replace(",", "")) for rate in found.groups())
    if not one or not eight:
        return None
    return one, eight


def _figures(
    runs: list[dict[str, Any]], scenario: str, server: str, key: str
) -> dict[int, float] | None:
    """
    C{server}'s C{key} in C{scenario}, by repetition number (a run without
    one gets a key of its own below zero); C{None} when the server has no
    run of the scenario that was not skipped.
    """
    mine = [
        r for r in runs
        if r["scenario"] == scenario and r["server"] == server and "skipped" not in r["summary"]
    ]
    if not mine:
        return None
    found: dict[int, float] = {}
    for index, run in enumerate(mine):
        value = run["summary"].get(key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            found[run.get("repetition", -1 - index)] = float(value)
    return found


def _range(ratios: Sequence[float]) -> str:
    if len(ratios) < 2:
        return ""
    return f" ({min(ratios):.2f}–{max(ratios):.2f}x)"


def _pairedRatios(mine: dict[int, float], theirs: dict[int, float]) -> list[float]:
    """
    The ratio of each repetition to the same repetition of the baseline.
    """
    return [
        mine[n] / theirs[n] for n in mine
        if n >= 0 and n in theirs and theirs[n]
    ]


def _verdict(value: float, bound: float, atLeast: bool) -> str:
    met = value >= bound if atLeast else value <= bound
    if met:
        return "met"
    if value <= 0:
        return "not met"
    gap = bound / value if atLeast else value / bound
    return f"not met, gap {gap:.2f}x"


def _format(value: float, column: Column) -> str:
    return f"{value / column.scale:,.{column.digits}f}"


def _column(scenario: Scenario | None, key: str) -> Column:
    for column in scenario.columns if scenario else ():
        if column.key == key:
            return column
    return Column(key, key, digits=2)


def _missing(*names: str) -> str:
    return " and ".join(f"`{name}`" for name in names) + " not in this run"


def _row(target: Target, runs: list[dict[str, Any]], column: Column) -> tuple[str, str]:
    """
    The measured and verdict cells of a target set against C{runs}.
    """
    if not any(r["scenario"] == target.scenario for r in runs):
        return f"{target.scenario} not in this run", "–"
    mine = _figures(runs, target.scenario, target.server, target.key)
    theirs = _figures(runs, target.scenario, BASELINE, target.key)
    absent = [name for name, figures in ((target.server, mine), (BASELINE, theirs))
              if figures is None and (target.relative or name == target.server)]
    if absent:
        return _missing(*absent), "–"
    assert mine is not None
    value = median(list(mine.values()))
    if math.isnan(value):
        return f"no {target.what} in this run", "–"
    shown = f"{_format(value, column)} {target.unit}"
    if len(mine) > 1:
        shown += f" ({_format(min(mine.values()), column)}–{_format(max(mine.values()), column)})"
    if not target.relative and target.bound is not None:
        return shown, _verdict(value / column.scale, target.bound, target.atLeast)
    assert theirs is not None
    base = median(list(theirs.values()))
    if math.isnan(base) or not base:
        return f"no {target.what} of `{BASELINE}` in this run", "–"
    ratio = value / base
    ratios = _range(_pairedRatios(mine, theirs))
    if target.bound is None:
        return (
            f"{shown}; {ratio:.2f}x{ratios} {BASELINE}'s {_format(base, column)} {target.unit}",
            "reported",
        )
    unit = target.unit if target.unit.startswith("/") else " " + target.unit
    verdict = _verdict(ratio, target.bound, target.atLeast)
    if verdict == "met" and target.stretch is not None:
        stretch = _verdict(ratio, target.stretch, target.atLeast)
        verdict += "; stretch " + stretch
    return (
        f"{ratio:.2f}x{ratios}: {_format(value, column)} vs {_format(base, column)}{unit}",
        verdict,
    )


def _diskRow(meta: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[str, str]:
    """
    The measured and verdict cells of the fsync target: L{DURABLE}'s
    completions/s against the disk's rate with 8 threads (S4 has 64
    uploads in flight, so concurrent fsyncs are what group commit has to
    beat), with the 1-thread rate beside.
    """
    if not any(r["scenario"] == "S4" for r in runs):
        return "S4 not in this run", "–"
    mine = _figures(runs, "S4", DURABLE, "uploadsPerS")
    if mine is None:
        return _missing(DURABLE), "–"
    rates = diskRates(meta)
    if rates is None:
        return "the disk's fsync rate not in this run", "–"
    one, eight = rates
    value = median(list(mine.values()))
    if math.isnan(value):
        return "no completions/s in this run", "–"
    ratio = value / eight
    return (
        f"{ratio:.2f}x{_range([v / eight for v in mine.values()])}: {value:,.0f} vs "
        f"{eight:,.0f}/s; {value / one:.2f}x the 1-thread {one:,.0f}/s",
        _verdict(ratio, DISK_SHARE, True),
    )


def renderTargets(data: dict[str, Any], scenarios: dict[str, Scenario]) -> list[str]:
    """
    The lines of the targets section for a results file's contents.

    @param data: the results file's contents.
    @param scenarios: the run's scenarios (for how each figure is shown).
    """
    meta, runs = data["meta"], data["runs"]
    out = [HEADING, "", "| target | measured | met? |", "|---|---|---|"]
    for target in TARGETS:
        if target.server == DURABLE:
            measured, verdict = _diskRow(meta, runs)
            label = f"{target.label} the disk's fsync rate with 8 threads"
        else:
            column = _column(scenarios.get(target.scenario), target.key)
            measured, verdict = _row(target, runs, column)
            label = target.label
        out.append(f"| {label} | {measured} | {verdict} |")
    out += [
        "",
        f"Issue 13's targets (sha-256 on). `uploadsvc` is the server run with "
        "`--no-fsync`, like the baselines, unless a row names another. A ratio is its "
        f"median over {meta['repetitions']} repetition(s) divided by `{BASELINE}`'s median "
        "in this run; in parentheses, the range of each repetition's ratio to the same "
        f"repetition of `{BASELINE}` (for an absolute figure, its range). A gap is the "
        "factor by which a figure misses its target. The fsync row uses this run's "
        "`bench.fsyncrate` rate with 8 threads (S4 keeps 64 uploads in flight), the "
        "1-thread rate beside.",
        "",
        "What limits each target that is not met, the profiles that show it (rerun "
        "with `bench/profile.py`) and what was tried: [bench/LIMITS.md](LIMITS.md).",
    ]
    if meta["quick"]:
        out += [
            "",
            "This is a quick run (scaled-down sizes); the targets are set for full runs.",
        ]
    return out
