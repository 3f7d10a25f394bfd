"""
The README as a new user follows it: scripts/serve run from any folder (its
relative paths are that folder's, and C{--logfile} writes the log there), the
resume recipe run as written, and links that lead to documents that exist.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.support.rawhttp import exchange, patternBytes
from tests.support.programs import startProgram
from tests.support.server import REPO_ROOT, freePort, startServer
from tests.support.staging import stageFullyAt
from tests.support.tools import requireTool

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

        def log() -> str:
            with open(output.name, "rb") as f:
                return repr(f.read()[-3000:])

        startProgram(
            self, [SERVE, *args, "--listen", f"tcp:{port}:interface=127.0.0.1", "--no-fsync"],
            port, log, STEP, cwd=caller, stdout=output, stderr=subprocess.STDOUT,
        )
        return caller, port

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


def readmeBlock(marker: str) -> str:
    """
    The README's indented code block that contains C{marker}.
    """
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.split(r"\n(?:[ \t]*\n)+", f.read())
    found = [b for b in blocks if marker in b and b.startswith("    ")]
    if len(found) != 1:
        raise AssertionError(f"expected one README code block with {marker!r}, found {len(found)}")
    return "\n".join(line[4:] for line in found[0].splitlines()) + "\n"


class ReadmeRecipeTests(SynchronousTestCase):
    """
    The README's shell recipes, run as written against a real server.
    """

    def test_resumeRecipe(self) -> None:
        """
        The README's resume recipe (offset from HEAD, the rest as a chunked
        Content-Range body) completes an interrupted upload.
        """
        self.runResumeRecipe(3000000, 1234567)

    def test_resumeRecipeFullyStaged(self) -> None:
        """
        The same recipe finishes an upload whose every byte arrived but
        which was never moved into place (a status query naming the total).
        """
        self.runResumeRecipe(3000000, 3000000, stageOnly=True)

    def runResumeRecipe(self, total: int, cut: int, stageOnly: bool = False) -> None:
        requireTool("curl")
        server = startServer(self, self.mktemp(), "--no-fsync")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        data = patternBytes(3, 0, total)
        with open(os.path.join(folder, "big.iso"), "wb") as f:
            f.write(data)
        if stageOnly:
            server.stop()
            stageFullyAt(server.root, "isos/big.iso", data, None)
            server.start()
        else:
            _, answer = exchange(
                server.port, "PUT", "/isos/big.iso",
                [("Content-Range", f"bytes 0-{cut - 1}/{total}"), ("Content-Length", str(cut))],
                data[:cut], timeout=STEP,
            )
            self.assertEqual(answer.status, 204, answer.raw)
        recipe = readmeBlock("tail -c +$((N + 1))")
        self.assertIn("http://127.0.0.1:8080/", recipe)
        recipe = recipe.replace("http://127.0.0.1:8080/", server.url("/"))
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", recipe], cwd=folder,
            capture_output=True, timeout=STEP,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b'"path": "isos/big.iso"', result.stdout)
        with open(os.path.join(server.root, "isos", "big.iso"), "rb") as f:
            self.assertEqual(f.read(), data)


#: The documents a user reads, and the code comments that cite the protocol.
DOCUMENTS = [os.path.join(REPO_ROOT, "README.md"), *glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))]
CITING = [
    *glob.glob(os.path.join(REPO_ROOT, "uploadsvc", "**", "*.py"), recursive=True),
    *glob.glob(os.path.join(REPO_ROOT, "bench", "*.md")),
]


class DocumentationTests(SynchronousTestCase):
    """
    The protocol document is in the repository and is what the docs cite.
    """

    def test_readmePointsAtProtocol(self) -> None:
        """The README links docs/protocol.md, which exists."""
        with open(DOCUMENTS[0], encoding="utf-8") as f:
            self.assertIn("](docs/protocol.md)", f.read())
        self.assertTrue(os.path.isfile(os.path.join(REPO_ROOT, "docs", "protocol.md")))

    def test_noMissingProtocolFile(self) -> None:
        """No document or code comment sends readers to a PROTOCOL.md, which the repository does not have."""
        self.assertFalse(os.path.exists(os.path.join(REPO_ROOT, "PROTOCOL.md")))
        for path in DOCUMENTS + CITING:
            with open(path, encoding="utf-8") as f:
                self.assertNotIn("PROTOCOL.md", f.read(), path)

    def test_linksResolve(self) -> None:
        """Every relative link in the README and docs/ names a file of the repository."""
        for path in DOCUMENTS:
            with open(path, encoding="utf-8") as f:
                targets = re.findall(r"\]\(([^)\s]+)\)", f.read())
            for target in targets:
                if re.match(r"[a-z]+:|#", target):
                    continue
                where = os.path.join(os.path.dirname(path), target.split("#", 1)[0])
                self.assertTrue(os.path.exists(where), f"{path}: link to {target}")
