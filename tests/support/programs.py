"""
Programs that end-to-end tests start (nginx, scripts/serve): stopped by
their PID when the test ends, waited for until they listen.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.support.server import REPO_ROOT


def startProgram(
    testCase: Any,
    argv: list[str],
    port: int,
    describe: Callable[[], str],
    limit: float = 30.0,
    **popenArgs: Any,
) -> subprocess.Popen:
    """
    Start C{argv}, stop it (SIGTERM, then SIGKILL) when C{testCase} cleans
    up, and return once it accepts connections on 127.0.0.1:C{port}.

    @param describe: what to show when it exits or never listens (the tail
        of its log).
    @param limit: seconds it has to start listening.
    """
    popenArgs.setdefault("stdin", subprocess.DEVNULL)
    popenArgs.setdefault("stdout", subprocess.DEVNULL)
    popenArgs.setdefault("stderr", subprocess.DEVNULL)
    process = subprocess.Popen(argv, **popenArgs)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(limit)

    testCase.addCleanup(stop)
    deadline = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            testCase.fail(f"{argv[0]} exited with {process.returncode}:\n{describe()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline:
                testCase.fail(f"{argv[0]} is not listening after {limit} s:\n{describe()}")
            time.sleep(0.05)


async def runUploadCLI(
    cwd: str, *args: str, env: dict[str, str] | None = None
) -> tuple[str, str, int]:
    """
    Run C{uploadsvc-upload} (this tree's, in a child Python) in C{cwd} with
    C{args}, no proxy variables and no C{UPLOADSVC_TOKEN} from our
    environment (C{env} may set them).

    @return: its stdout, its stderr and its exit status.
    """
    environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environ.pop("UPLOADSVC_TOKEN", None)
    environ["PYTHONPATH"] = REPO_ROOT
    environ.update(env or {})
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-c", "from uploadsvc.client.cli import main; main()", *args],
        env=environ, path=cwd, reactor=reactor,
    )
    return out.decode(), err.decode(), code
