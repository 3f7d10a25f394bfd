"""
Fewer glibc malloc arenas for the server process.

glibc gives each thread that allocates its own arena (up to eight per core),
and an arena keeps the memory freed in it for reuse instead of returning it.
The disk threads free request bodies' buffers in their arenas, so a server's
RSS under load held two to three times the memory its allocations used, and
rose in steps as load moved between threads (measured with C{mallinfo2}
in L{bench.rssload}: 11-12 MiB in use, 36-38 MiB free in the arenas). Two
arenas (the main one and one for all the threads) keep what is free
shared; the disk threads spend their time in system calls, not in malloc.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Mapping

#: C{mallopt}'s parameter number for the arena limit (glibc C{malloc.h}).
M_ARENA_MAX = -8

#: Arenas the server uses unless the environment says otherwise.
DEFAULT_ARENAS = 2

#: Seconds between two hand-backs of freed memory (L{freeMemoryTrimmer}).
TRIM_INTERVAL = 10.0


def limitArenas(
    count: int = DEFAULT_ARENAS,
    environ: Mapping[str, str] | None = None,
    libc: Any = None,
) -> str:
    """
    Cap the malloc arenas of this process at C{count}, before the disk
    threads start (a thread takes its arena at its first allocation).

    @param environ: the environment; when it sets C{MALLOC_ARENA_MAX} the
        operator's value (which glibc read at start) is left as it is.
    @param libc: the C library (C{ctypes.CDLL(None)} by default); one
        without C{mallopt} (musl, macOS) is left as it is.
    @return: one line saying what was done, for the log.
    """
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ:
        return f"malloc arenas: MALLOC_ARENA_MAX={environ['MALLOC_ARENA_MAX']} from the environment"
    if libc is None:
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return "malloc arenas: no C library found, left as they are"
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return "malloc arenas: the C library has no mallopt, left as they are"
    if mallopt(M_ARENA_MAX, count) != 1:
        return "malloc arenas: mallopt(M_ARENA_MAX) refused, left as they are"
    return f"malloc arenas: at most {count} (MALLOC_ARENA_MAX overrides)"


def freeMemoryTrimmer(libc: Any = None) -> Callable[[], None] | None:
    """
    A function that hands the memory free in malloc's arenas back to the
    system (C{malloc_trim(0)}): even two arenas keep what a burst of
    uploads freed, and RSS then rose in steps that no allocation explained.
    L{None} when the C library has no C{malloc_trim} (musl, macOS).

    @param libc: the C library (C{ctypes.CDLL(None)} by default).
    """
    if libc is None:
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None

    def trimFreeMemory() -> None:
        trim(0)

    return trimFreeMemory
