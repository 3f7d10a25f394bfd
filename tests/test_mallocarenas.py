"""
L{uploadsvc.ops.mallocarenas}: the server caps glibc's malloc arenas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from twisted.trial.unittest import SynchronousTestCase

from twisted.internet.testing import MemoryReactorClock

from uploadsvc.ops.mallocarenas import (
    DEFAULT_ARENAS,
    M_ARENA_MAX,
    TRIM_INTERVAL,
    freeMemoryTrimmer,
    limitArenas,
)
from uploadsvc.tap import Options, makeService
from tests.support.server import startServer


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer

    def malloc_trim(self, pad: int) -> int:
        self.calls.append((0, pad))
        return 1


#: A process that starts 6 threads that each allocate and stay alive, then
#: prints how many arenas glibc's malloc_info reports.
_COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from uploadsvc.ops.mallocarenas import limitArenas
    if sys.argv[1] == "limit":
        limitArenas(2, environ={})
    libc = ctypes.CDLL(None)
    barrier = threading.Barrier(7)
    def work():
        held = [bytes(bytearray(100_000)) for _ in range(4)]
        barrier.wait()
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    barrier.wait()
    libc.open_memstream.restype = ctypes.c_void_p
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(buf.value.decode().count("<heap nr="))
    barrier.wait()
    for t in threads:
        t.join()
    """
)


def arenasWith(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode], capture_output=True, check=True, timeout=60,
    )
    return int(out.stdout)


class LimitArenasTests(SynchronousTestCase):
    def test_setsArenaMax(self) -> None:
        """
        Without C{MALLOC_ARENA_MAX} in the environment it calls
        C{mallopt(M_ARENA_MAX, count)} and says so.
        """
        libc = FakeLibc()
        line = limitArenas(2, environ={}, libc=libc)
        self.assertEqual(libc.calls, [(M_ARENA_MAX, 2)])
        self.assertEqual(M_ARENA_MAX, -8)
        self.assertIn("at most 2", line)

    def test_environmentWins(self) -> None:
        """
        The operator's C{MALLOC_ARENA_MAX} is left in force.
        """
        libc = FakeLibc()
        line = limitArenas(2, environ={"MALLOC_ARENA_MAX": "4"}, libc=libc)
        self.assertEqual(libc.calls, [])
        self.assertIn("MALLOC_ARENA_MAX=4", line)

    def test_noMallopt(self) -> None:
        """
        A C library without C{mallopt} (musl, macOS) or one that refuses it
        is left as it is, with a line that says so.
        """
        self.assertIn("no mallopt", limitArenas(2, environ={}, libc=object()))
        self.assertIn("refused", limitArenas(2, environ={}, libc=FakeLibc(answer=0)))

    def test_realProcess(self) -> None:
        """
        In a real process on glibc, six allocating threads get their own
        arenas, and with the limit all share two.
        """
        self.assertGreater(arenasWith("free"), 2)
        self.assertLessEqual(arenasWith("limit"), 2)


class ServerTests(SynchronousTestCase):
    def test_serverLimitsArenas(self) -> None:
        """
        A real C{twistd uploadsvc} caps its arenas at start and logs it in
        one line; with C{MALLOC_ARENA_MAX} set it leaves the operator's.
        """
        server = startServer(self, os.path.join(self.mktemp(), "root"))
        self.assertIn("malloc arenas: at most 2 (MALLOC_ARENA_MAX overrides)", server.logText())
        other = startServer(
            self, os.path.join(self.mktemp(), "root"), env={"MALLOC_ARENA_MAX": "4"}
        )
        self.assertIn("malloc arenas: MALLOC_ARENA_MAX=4 from the environment", other.logText())


class SystemdUnitTests(SynchronousTestCase):
    def test_unitNamesTheServersSetting(self) -> None:
        """
        The systemd unit sets C{MALLOC_ARENA_MAX} to what the server would
        set itself, so the line shows the setting without changing it.
        """
        unit = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "tap-configs", "uploadsvc.service")
        with open(unit, encoding="utf-8") as f:
            lines = [l.strip() for l in f if l.startswith("Environment=")]
        self.assertIn(f"Environment=MALLOC_ARENA_MAX={DEFAULT_ARENAS}", lines)


#: A process that frees most of 100 MiB of small allocations (kept below the
#: heap's top, so freeing alone returns nothing) and prints its RSS in KiB
#: before and after the trimmer runs.
_TRIM = textwrap.dedent(
    """
    from uploadsvc.ops.mallocarenas import freeMemoryTrimmer
    def rss():
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS")).split()[1])
    blocks = [bytes(bytearray(2000)) for _ in range(50_000)]
    keep = blocks[::50]
    del blocks
    before = rss()
    freeMemoryTrimmer()()
    print(before, rss())
    """
)


class TrimTests(SynchronousTestCase):
    def test_callsMallocTrim(self) -> None:
        """
        The trimmer calls C{malloc_trim(0)}; without it in the C library
        there is no trimmer.
        """
        libc = FakeLibc()
        trim = freeMemoryTrimmer(libc)
        assert trim is not None
        trim()
        self.assertEqual(libc.calls, [(0, 0)])
        self.assertIsNone(freeMemoryTrimmer(object()))

    def test_realProcessGivesBack(self) -> None:
        """
        In a real process, memory that was freed but stayed resident is
        handed back: RSS falls by most of the 98 MiB freed.
        """
        out = subprocess.run(
            [sys.executable, "-c", _TRIM], capture_output=True, check=True, timeout=60,
        )
        before, after = map(int, out.stdout.split())
        self.assertGreater(before - after, 50 * 1024)

    def test_serviceTrimsEveryInterval(self) -> None:
        """
        The service tree runs the trimmer every L{TRIM_INTERVAL} seconds on
        its reactor's clock.
        """
        options = Options()
        options.parseOptions(["--root", os.path.abspath(self.mktemp())])
        top = makeService(options, MemoryReactorClock())
        trimmer = top.getServiceNamed("malloc-trim")
        self.assertEqual(trimmer.step, TRIM_INTERVAL)  # type: ignore[attr-defined]
