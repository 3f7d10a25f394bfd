"""
scripts/serve as the README uses it: run from any folder, its relative paths
are that folder's, and C{--logfile} writes the log there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.testing.rawhttp import exchange
from uploadsvc.testing.server import REPO_ROOT, freePort

SERVE = os.path.join(REPO_ROOT, "scripts", "serve")

#: Seconds a start or a stop may take before the test fails (a ceiling so
#: that nothing hangs, not a performance bound).
STEP = 60.0


class ServeTests(SynchronousTestCase):
    """
    scripts/serve started the way a user starts it, from a folder of theirs.
    """

    def serve(self, *args: str) -> tuple[str, int]:
        """
        Run C{scripts/serve ARGS --listen <free port>} from a new folder
        (stopped in cleanup) until it accepts connections.

        @return: the folder it runs in, and its port.
        """
        caller = os.path.abspath(self.mktemp())
        os.makedirs(caller)
        port = freePort()
        output = open(os.path.join(caller, "..", os.path.basename(caller) + ".out"), "wb")
        self.addCleanup(output.close)
        process = subprocess.Popen(
            [SERVE, *args, "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-fsync"],
            cwd=caller, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(STEP)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STEP)

        self.addCleanup(stop)
        deadline = time.monotonic() + STEP
        for _ in range(3000):
            if process.poll() is not None:
                with open(output.name, "rb") as f:
                    self.fail(f"scripts/serve exited with {process.returncode}: {f.read()[-3000:]!r}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return caller, port
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self.fail(f"scripts/serve is not listening after {STEP} s")

    def upload(self, port: int, path: str, body: bytes) -> None:
        _, answer = exchange(port, "PUT", path, [("Content-Length", str(len(body)))], body, timeout=STEP)
        self.assertEqual(answer.status, 201, answer.raw)

    def test_relativePathsAreTheCallers(self) -> None:
        """
        C{--root ./x} serves C{$PWD/x} and C{--logfile ./l.log} writes
        C{$PWD/l.log}, not paths in the repository.
        """
        caller, port = self.serve("--root", "./x", "--logfile", "./l.log")
        self.upload(port, "/a/b.txt", b"hello\n")
        with open(os.path.join(caller, "x", "a", "b.txt"), "rb") as f:
            self.assertEqual(f.read(), b"hello\n")
        with open(os.path.join(caller, "l.log"), encoding="utf-8") as f:
            log = f.read()
        self.assertIn(f"storing into {os.path.join(caller, 'x')} ", log)
        self.assertFalse(os.path.exists(os.path.join(REPO_ROOT, "l.log")))

    def test_defaultRootIsTheCallers(self) -> None:
        """
        Without C{--root} the uploads go to C{$PWD/uploads}, and no pid file
        is left in C{$PWD}.
        """
        caller, port = self.serve()
        self.upload(port, "/c.txt", b"default root\n")
        with open(os.path.join(caller, "uploads", "c.txt"), "rb") as f:
            self.assertEqual(f.read(), b"default root\n")
        self.assertEqual(os.listdir(caller), ["uploads"])

    def test_logfileEquals(self) -> None:
        """C{--logfile=FILE} is accepted as well and names a file in C{$PWD}."""
        caller, port = self.serve("--root", "r", "--logfile=serve.log")
        self.upload(port, "/d.txt", b"logged\n")
        with open(os.path.join(caller, "serve.log"), encoding="utf-8") as f:
            self.assertIn('"PUT /d.txt HTTP/1.1" 201', f.read())
