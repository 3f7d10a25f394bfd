"""
The package type-checks: mypy with the zope plugin over uploadsvc/ (the
configuration is mypy.ini), so an interface and its providers cannot drift.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MypyTests(TestCase):
    timeout = 600

    def test_clean(self) -> None:
        """mypy finds no issue in the package."""
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", os.path.join(REPO, "mypy.ini"),
             "--cache-dir", os.path.abspath(self.mktemp()), os.path.join(REPO, "uploadsvc")],
            capture_output=True, text=True, cwd=REPO, timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
