"""
L{uploadsvc.storage.safepath.mountOf}: one C{statx} call tells the same
device and mount id as C{fstat} and C{/proc/self/fdinfo}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.storage import safepath


class MountOfTests(SynchronousTestCase):
    def folder(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        return fd

    def test_statxAgreesWithProc(self) -> None:
        """
        On folders of different mounts (C{/}, C{/proc}, C{/dev}, the test
        folder), C{statx}'s device and mount id are C{fstat}'s and fdinfo's.
        """
        seen = set()
        for path in ("/", "/proc", "/dev", "."):
            fd = self.folder(path)
            fast = safepath._statxMount(fd)
            self.assertIsNotNone(fast, "this kernel reports mount ids through statx")
            self.assertEqual(fast, (os.fstat(fd).st_dev, safepath._fdinfoMount(fd)), path)
            self.assertEqual(safepath.mountOf(fd), fast)
            seen.add(fast)
        self.assertGreater(len(seen), 1)

    def test_withoutStatx(self) -> None:
        """
        Where there is no C{statx}, C{fstat} and fdinfo give the answer
        C{statx} gives.
        """
        folders = [self.folder(path) for path in ("/", "/proc", ".")]
        fast = [safepath._statxMount(fd) for fd in folders]
        self.patch(safepath, "_statx", None)
        self.assertEqual([safepath._statxMount(fd) for fd in folders], [None] * 3)
        self.assertEqual([safepath.mountOf(fd) for fd in folders], fast)
