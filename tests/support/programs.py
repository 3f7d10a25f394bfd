"""
Programs that end-to-end tests start (nginx, scripts/serve): stopped by
their PID when the test ends, waited for until they listen.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any, Callable


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
