"""
Turn a results file (JSON, written by L{bench.run}) into Markdown: the
machine, the command, and per scenario a table of medians with their ranges
over the repetitions, then every uploadsvc figure as a ratio to each baseline
measured in the same run.

Regenerate a report from saved results with::

    .venv/bin/python -m bench.report bench/work/results-<stamp>.json -o bench/RESULTS.md

The figures of the last chaos run (L{bench.chaos}, committed as
C{bench/chaos-results.json}) are appended as a section of their own; to
renew only that section of an existing report::

    .venv/bin/python -m bench.report --chaos-only -o bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import Column, FULL, QUICK, build, median, sourceSize
from bench.targets import diskRates, renderTargets

BASELINES = ("aiohttp", "nginx")

#: The chaos run's figures, written by L{bench.chaos}.
CHAOS_RESULTS = Path(__file__).resolve().parent / "chaos-results.json"
#: The heading of the chaos section (and where L{replaceChaos} finds it).
CHAOS_HEADING = "## Chaos run (issue 12)"


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


def _diskRateLines(
    meta: dict[str, Any], byServer: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """
    S4 only: each durable uploadsvc server's completions/s as a ratio to the
    disk's own rate of durable small completions measured by this run (with
    1 and 8 threads: the ceiling that batching fsyncs aims at), and to
    C{uploadsvc} without fsync in the same run.
    """
    rates = diskRates(meta)
    if rates is None:
        return []
    one, eight = rates
    lines = []
    for name in meta.get("durable", ["uploadsvc-fsync"]):
        mine = median(_values(byServer.get(name, []), "uploadsPerS"))
        if math.isnan(mine):
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
    out += [""] + renderTargets(data, scenarios)
    return "\n".join(out) + "\n"


def _mib(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.1f}"


def renderChaos(data: dict[str, Any]) -> str:
    """
    The Markdown section of a chaos run's figures (see L{bench.chaos}).
    """
    machine = data["machine"]
    failures = data.get("failures", [])
    out = [
        f"{CHAOS_HEADING}: three servers on GlusterFS behind nginx and the fault proxy",
        "",
        f"- Command: `{data['command']}` (as root)",
        f"- Date: {data['date']}; uploadsvc commit {machine.get('uploadsvc commit', '?')}; "
        f"{machine.get('CPUs (nproc)', '?')} CPUs ({machine.get('CPU', '?')}), "
        f"kernel {machine.get('kernel', '?')}, Python {machine.get('Python', '?')}, "
        f"Twisted {machine.get('Twisted', '?')}, {machine.get('GlusterFS', '?')}, "
        f"nginx {machine.get('nginx', '?')}",
        "- Result: " + ("**passed**" if not failures else "**FAILED**: " + "; ".join(failures)),
        f"- Uploads ({data['clients']} clients, 1 byte to {data['maxSize']:,} bytes, new files "
        f"begun for {data['chaosSeconds']:.0f} s, all done after {data['wallSeconds']:.0f} s): "
        f"{data['uploads']}; complete and byte-identical: {data['identical']}; wrong bytes: "
        f"{data['wrong']}; not finished in time: {data['unfinished']}",
        f"- Answers 500 in the servers' logs: {data['answers500']}; tracebacks: "
        f"{data['tracebacks']}"
        + "".join(f"\n  - `{line}`" for line in data.get("errorLines", [])),
        f"- Servers 2 and 3 killed (`kill -9`) and restarted: {data['kills']} times; longest "
        f"exit after the kill: {data['longestExitSeconds']:.1f} s; exits slower than "
        f"{data['slowExitLimit']:g} s: {data['slowExits']}"
        + (
            " (blocked in: " + ", ".join(f"{what} ×{n}" for what, n in data["blockedIn"].items())
            + f"; freed by ending the mount's client and mounting again, {data['remounts']} times)"
            if data["slowExits"] else ""
        ),
        f"- Staged files (.data, .json) when clients were done: {data['stagedWhenDone']}; after "
        f"expiry (--expire-after {data['expireAfter']}): {data['stagedAfterExpiry']}; "
        f"metadata temp files left by killed servers (removed after an hour): {data['tempsLeft']}",
        f"- Client rounds (HEAD+PUT): {data['rounds']}; failed rounds (cut, reset, stalled, "
        f"server killed): {data['failedRounds']}; why: "
        + ", ".join(f"{reason} {n}" for reason, n in data["reasons"].items()),
    ]
    spared = data.get("rssSpared")
    if spared:
        out.append(
            f"- RSS of server 1 (never killed, under load the whole run; MiB): first "
            f"{_mib(spared['firstMiB'])}, after {spared['warmUpSeconds']:g} s "
            f"{_mib(spared['afterWarmUpMiB'])}, last {_mib(spared['lastMiB'])}, max "
            f"{_mib(spared['maxMiB'])}; slope over the second half (from "
            f"{spared['slopeFromSeconds']:.0f} s): {spared['slopeMiBPerMinute']:+.2f} MiB/min "
            f"({spared['samples']} samples)"
        )
        if spared.get("series"):
            out.append(
                "  - every 30 s (s: MiB): "
                + ", ".join(f"{t}: {mib:.0f}" for t, mib in spared["series"])
            )
    for server, rss in data.get("rssKilled", {}).items():
        out.append(
            f"- RSS of server {server} over its lives (MiB, each life starts again): first "
            f"{_mib(rss['firstMiB'])}, median {_mib(rss['medianMiB'])}, max {_mib(rss['maxMiB'])} "
            f"({rss['samples']} samples)"
        )
    return "\n".join(out) + "\n"


def replaceChaos(report: str, section: str) -> str:
    """
    C{report} with its chaos section (from L{CHAOS_HEADING} to the next
    second-level heading or the end) replaced by C{section}, or with
    C{section} appended when it has none.
    """
    lines = report.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(CHAOS_HEADING)), None)
    if start is None:
        return report.rstrip("\n") + "\n\n" + section
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
    )
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + rest if rest else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render bench results as Markdown.")
    parser.add_argument("results", type=Path, nargs="?")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--chaos", type=Path, default=CHAOS_RESULTS,
                        help="the chaos run's figures, appended when the file exists")
    parser.add_argument("--chaos-only", action="store_true",
                        help="renew only the chaos section of the report at --output")
    args = parser.parse_args(argv)
    section = renderChaos(json.loads(args.chaos.read_text())) if args.chaos.exists() else None
    if args.chaos_only:
        if args.output is None or section is None:
            parser.error("--chaos-only needs --output and the chaos figures (--chaos)")
        args.output.write_text(replaceChaos(args.output.read_text(), section))
        return
    if args.results is None:
        parser.error("a results file is needed (or --chaos-only)")
    text = render(json.loads(args.results.read_text()))
    if section is not None:
        text = replaceChaos(text, section)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
