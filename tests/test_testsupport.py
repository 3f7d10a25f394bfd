"""
The line between C{uploadsvc.testing} (shipped, for users' tests) and
C{tests/support} (this project's own harness, not shipped).
"""

from __future__ import annotations

import ast
import os
import pkgutil

from twisted.trial.unittest import SynchronousTestCase

import uploadsvc
import uploadsvc.testing

PACKAGE = os.path.dirname(os.path.abspath(uploadsvc.__file__))


class BoundaryTests(SynchronousTestCase):
    """
    The shipped package stands without the test harness.
    """

    def test_noImportOfTests(self) -> None:
        """
        No module of the package imports from C{tests} (which is not
        installed).
        """
        offenders = []
        for folder, _, files in os.walk(PACKAGE):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        modules = [node.module or ""]
                    else:
                        continue
                    offenders += [
                        f"{os.path.relpath(path, PACKAGE)}: {m}"
                        for m in modules
                        if m == "tests" or m.startswith("tests.")
                    ]
        self.assertEqual(offenders, [])

    def test_testingDocumented(self) -> None:
        """
        Every module of C{uploadsvc.testing} is named in the package's
        docstring, which tells users what they may import.
        """
        doc = uploadsvc.testing.__doc__ or ""
        names = [m.name for m in pkgutil.iter_modules(uploadsvc.testing.__path__)]
        self.assertEqual(
            sorted(names),
            ["faultproxy", "forwardedstrategies", "runners", "strategies", "tusstrategies"],
        )
        for name in names:
            self.assertIn(f"L{{uploadsvc.testing.{name}}}", doc)
