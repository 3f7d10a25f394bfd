"""
Turn a results file (JSON, written by L{bench.run}) into Markdown: the
machine, the command, and per scenario a table of medians with their ranges
over the repetitions, then every uploadsvc figure as a ratio to each baseline
measured in the same run.

Regenerate a report from saved results with::

    .venv/bin/python -m bench.report bench/work/results-<stamp>.json -o bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import Column, FULL, QUICK, build, median, sourceSize

BASELINES = ("aiohttp", "nginx")


def _values(runs: list[dict[str, Any]], key: str) -> list[float]:
    found = []
    for run in runs:
        value = run.get(key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            found.append(float(value))
    return found


def _format(value: float, column: Column) -> str:
    if math.isnan(value):
        return "–"
    return f"{value / column.scale:,.{column.digits}f}"


def _cell(runs: list[dict[str, Any]], column: Column) -> str:
    values = _values(runs, column.key)
    if not values:
        return "–"
    middle = _format(median(values), column)
    if len(values) == 1:
        return middle
    return f"{middle} ({_format(min(values), column)}–{_format(max(values), column)})"


def _ratio(
    candidate: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    column: Column,
    durable: bool,
) -> str:
    mine = median(_values(candidate, column.key))
    key = column.durableKey if durable and column.durableKey else column.key
    theirs = median(_values(baseline, key))
    if math.isnan(mine) or math.isnan(theirs) or theirs == 0:
        return "–"
    return f"{mine / theirs:.2f}x"


#: The disk's rates in the header line of L{bench.fsyncrate.describe}.
_DISK_RATES = re.compile(r"([\d,.]+) durable 64 KiB completions/s with 1 thread, ([\d,.]+)/s with 8")


def _diskRateLines(
    meta: dict[str, Any], byServer: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """
    S4 only: each durable uploadsvc server's completions/s as a ratio to the
    disk's own rate of durable small completions measured by this run (with
    1 and 8 threads: the ceiling that batching fsyncs aims at), and to
    C{uploadsvc} without fsync in the same run.
    """
    found = _DISK_RATES.search(str(meta["machine"].get("disk (work folder)", "")))
    if found is None:
        return []
    one, eight = (float(rate.replace(",", "")) for rate in found.groups())
    lines = []
    for name in meta.get("durable", ["uploadsvc-fsync"]):
        mine = median(_values(byServer.get(name, []), "uploadsPerS"))
        if math.isnan(mine) or not one or not eight:
            continue
        line = (
            f"- {name}: {mine:,.0f} durable completions/s = {mine / one:.2f}x the disk's "
            f"{one:,.0f}/s with 1 thread, {mine / eight:.2f}x its {eight:,.0f}/s with 8"
        )
        unsynced = median(_values(byServer.get("uploadsvc", []), "uploadsPerS"))
        if not math.isnan(unsynced) and unsynced:
            line += f"; {mine / unsynced:.2f}x uploadsvc --no-fsync ({unsynced:,.0f}/s)"
        lines.append(line)
    return lines


def _machineSection(meta: dict[str, Any]) -> list[str]:
    machine = meta["machine"]
    lines = [
        f"- Date: {meta['date']}",
        f"- Command: `{meta['command']}`",
        f"- Mode: {'quick (scaled-down sizes, for smoke testing)' if meta['quick'] else 'full'}"
        f", {meta['repetitions']} repetition(s), servers interleaved run by run",
    ]
    for key, value in machine.items():
        lines.append(f"- {key}: {value}")
    for name, args in meta.get("serverArgs", {}).items():
        if args:
            lines.append(f"- {name}: extra arguments `{' '.join(args)}`")
    if meta.get("uploadsvcArgs"):
        lines.append(
            f"- every uploadsvc server: extra arguments `{' '.join(meta['uploadsvcArgs'])}`"
        )
    for name, reason in meta.get("unavailable", {}).items():
        lines.append(f"- **{name} not run**: {reason}")
    return lines


def render(data: dict[str, Any]) -> str:
    """
    The Markdown report of a results file's contents.
    """
    meta = data["meta"]
    scenarios = build(QUICK if meta["quick"] else FULL, sourceSize(QUICK if meta["quick"] else FULL))
    out = ["# uploadsvc benchmark results", ""]
    out += _machineSection(meta)
    out += [
        "",
        "Cells are the median over repetitions with the range (min–max) in "
        "parentheses. Server CPU is user+system of the whole server process "
        "tree from /proc; peak RSS is the largest sum of the tree's RSS "
        "sampled during the load. Every stored file was compared with its "
        "source byte for byte (SHA-256 of the stored file against the source "
        "region); the `ok` column counts uploads answered 2xx and verified.",
        "",
        "Ratios are uploadsvc's median divided by the baseline's median from "
        "the same run. `uploadsvc` runs with `--no-fsync` (like the baselines); "
        "`uploadsvc-fsync` is the durable default, and its throughput (like "
        "that of any uploadsvc server run without `--no-fsync`) is compared "
        "with the baselines' throughput including a final `sync`. For latency, "
        "CPU and memory a ratio below 1 is better; for throughput, above 1.",
    ]
    runs = data["runs"]
    for key, scenario in scenarios.items():
        mine = [r for r in runs if r["scenario"] == key]
        if not mine:
            continue
        out += ["", f"## {key}: {scenario.title}", ""]
        names = [n for n in meta["servers"] if any(r["server"] == n for r in mine)]
        header = ["server"] + [c.label for c in scenario.columns] + ["ok"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        byServer: dict[str, list[dict[str, Any]]] = {}
        notes = []
        for name in names:
            theirs = [r for r in mine if r["server"] == name]
            done = [r["summary"] for r in theirs if "skipped" not in r["summary"]]
            skipped = {r["summary"]["skipped"] for r in theirs if "skipped" in r["summary"]}
            for reason in sorted(skipped):
                notes.append(f"- {name} skipped: {reason}")
            if not done:
                continue
            byServer[name] = done
            ok = sum(r["ok"] - r["verifyFailed"] for r in done)
            total = sum(r["uploads"] for r in done)
            cells = [name] + [_cell(done, c) for c in scenario.columns] + [f"{ok}/{total}"]
            out.append("| " + " | ".join(cells) + " |")
            for run in done:
                for error in run.get("errors", []):
                    notes.append(f"- {name}: {error}")
        pairs = [
            (c, b) for c in byServer for b in BASELINES
            if c.startswith("uploadsvc") and b in byServer
        ]
        compared = [c for c in scenario.columns if c.compared]
        if pairs:
            out += ["", "| ratio | " + " | ".join(c.label for c in compared) + " |"]
            out.append("|" + "---|" * (len(compared) + 1))
            for candidate, baseline in pairs:
                durable = candidate in meta.get("durable", ["uploadsvc-fsync"])
                cells = [
                    _ratio(byServer[candidate], byServer[baseline], c, durable)
                    for c in compared
                ]
                out.append(f"| {candidate} / {baseline} | " + " | ".join(cells) + " |")
        if key == "S4":
            rates = _diskRateLines(meta, byServer)
            if rates:
                out += ["", "With fsync on, against the disk's rate (`bench/fsyncrate.py`):", ""]
                out += rates
        if notes:
            out += [""] + sorted(set(notes))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render bench results as Markdown.")
    parser.add_argument("results", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    text = render(json.loads(args.results.read_text()))
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
