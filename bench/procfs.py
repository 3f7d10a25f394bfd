"""
CPU time and memory of a process tree, read from C{/proc}.

A server may be one process (aiohttp, twistd) or several (nginx's master and
worker, uploadsvc with C{--workers}), so every figure here covers the whole
tree below one PID.
"""

from __future__ import annotations

import os
from typing import Iterator

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def readStat(pid: int, tid: int | None = None) -> list[str] | None:
    """
    The fields of C{/proc/<pid>/stat} after the command name, or L{None} when
    the process is gone.  Field 3 (state) is at index 0.

    @param tid: one thread of C{pid}: its own fields
        (C{/proc/<pid>/task/<tid>/stat}; C{/proc/<tid>/stat} would give the
        whole process's).
    """
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself hold spaces or ')'.
    return raw[raw.rindex(b")") + 2 :].decode("ascii").split()


def threads(pid: int) -> list[int]:
    """
    The ids of C{pid}'s threads (none when it is gone).
    """
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _children(pid: int) -> list[int]:
    """
    The direct children of C{pid} (of any of its threads).
    """
    found: list[int] = []
    for tid in threads(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue
    return found


def processTree(pid: int) -> list[int]:
    """
    C{pid} and all its live descendants, parents first.

    @return: an empty list when C{pid} is gone.
    """
    if readStat(pid) is None:
        return []
    tree = [pid]
    index = 0
    # Bounded: a process tree on this machine has far fewer than 10000 nodes.
    while index < len(tree) and len(tree) < 10000:
        tree.extend(_children(tree[index]))
        index += 1
    return tree


def startTime(pid: int) -> int | None:
    """
    The start time of C{pid} in clock ticks since boot, which tells a process
    from a later one that reused its PID.
    """
    fields = readStat(pid)
    return None if fields is None else int(fields[19])


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU seconds of C{pid} and every live descendant, plus the
    CPU of descendants that have already been reaped (C{cutime}, C{cstime}).
    """
    ticks = 0
    for member in processTree(pid):
        fields = readStat(member)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14..17.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / _CLOCK_TICKS


def _statusFields(pid: int) -> Iterator[tuple[str, str]]:
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return
    for line in lines:
        key, _, value = line.partition(":")
        yield key, value.strip()


def _kib(pid: int, key: str) -> int:
    for name, value in _statusFields(pid):
        if name == key:
            return int(value.split()[0]) * 1024
    return 0


def treeRss(pid: int) -> int:
    """
    The resident set size in bytes, summed over C{pid} and its descendants.
    """
    return sum(_kib(member, "VmRSS") for member in processTree(pid))


def treeHighWaterMark(pid: int) -> int:
    """
    The sum of every live tree member's own peak RSS (C{VmHWM}) in bytes: an
    upper bound of the tree's peak, exact for a single process.
    """
    return sum(_kib(member, "VmHWM") for member in processTree(pid))


def cpuModel() -> str:
    """
    The CPU's model name from C{/proc/cpuinfo} (C{"?"} when it has none),
    for the header of a run's figures.
    """
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"
