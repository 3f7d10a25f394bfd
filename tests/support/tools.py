"""
System programs that end-to-end tests drive (nginx, curl, openssl).

On a developer's machine a missing program skips the tests that need it; in
CI (C{CI} set in the environment, as C{.ci/run} runs) it fails them, because
C{.ci/run} installs every one of them and a skip there would hide a gap.
"""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SkipTest


def requireTool(name: str) -> str:
    """
    The path of the program C{name} (also looked for in C{/usr/sbin}, where
    Debian puts nginx).

    @raise SkipTest: it is missing and this is not CI.
    @raise AssertionError: it is missing in CI.
    """
    found = shutil.which(name)
    if found is None:
        candidate = os.path.join("/usr/sbin", name)
        if os.access(candidate, os.X_OK):
            found = candidate
    if found is not None:
        return found
    message = f"{name} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        raise AssertionError(message)
    raise SkipTest(message)
