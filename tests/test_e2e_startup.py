"""
Start-up mistakes on the real command line (issue 8 item 16): each one ends
C{twistd uploadsvc} with one clear line on stderr, no traceback and exit
status 1; C{--help} of the server and of the project's tools reads as plain
text.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Sequence

import attr
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.rawhttp import exchange
from tests.support.server import REPO_ROOT, TWISTD, freePort, startServer

#: Whatever epytext leaves in text that was not rendered.
EPYTEXT = ("L{", "C{", "I{", "B{", "U{", "@param", "@ivar", "@return", "::")


@attr.s(frozen=True, auto_attribs=True)
class Run:
    """
    What one command run left: its exit status, stdout and stderr.
    """

    code: int
    out: str
    err: str


def run(argv: Sequence[str], cwd: str, timeout: float = 60) -> Run:
    """
    Run C{argv} with this checkout on C{PYTHONPATH} and an 80-column
    terminal, and wait for it (at most C{timeout} seconds).
    """
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, COLUMNS="80")
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=timeout,
    )
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


class StartupTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def twistd(self, *args: str) -> Run:
        """
        C{twistd -n uploadsvc ARGS} (on a free loopback port unless ARGS
        name one); a run that started serving would hit the timeout.
        """
        if not any(a.startswith("--listen") for a in args):
            args += ("--listen", f"tcp:{freePort()}:interface=127.0.0.1")
        return run([*TWISTD, "-n", "--pidfile=", "uploadsvc", *args], self.base)

    def assertOneLine(self, result: Run, expected: str) -> None:
        """
        Assert that C{result} is a refusal: exit status 1, no traceback, and
        stderr exactly one line, C{twistd uploadsvc: ...} holding
        C{expected}.
        """
        where = f"exit {result.code}\nstderr:\n{result.err}\nstdout:\n{result.out[-2000:]}"
        self.assertEqual(result.code, 1, where)
        self.assertNotIn("Traceback", result.err + result.out, where)
        lines = result.err.splitlines()
        self.assertEqual(len(lines), 1, where)
        self.assertTrue(lines[0].startswith("twistd uploadsvc: "), where)
        self.assertIn(expected, lines[0], where)


class OptionMistakeTests(StartupTestCase):
    """
    Mistakes on the command line itself.
    """

    def test_typo(self) -> None:
        """A mistyped option gets one line that names it, not the whole --help."""
        result = self.twistd("--rot", "x")
        self.assertOneLine(result, "unknown option --rot")
        self.assertEqual(result.err, "twistd uploadsvc: unknown option --rot; see --help\n")
        self.assertEqual(result.out, "")

    def test_startOfAName(self) -> None:
        """The start of an option's name is refused in one line, not taken for that option."""
        result = self.twistd("--disk-thread", "2")
        self.assertEqual(result.err, "twistd uploadsvc: unknown option --disk-thread; see --help\n")
        self.assertOneLine(result, "unknown option --disk-thread")

    def test_badSize(self) -> None:
        """A size that is not one is refused with the option's name and how to write one."""
        result = self.twistd("--min-free", "1Q")
        self.assertOneLine(result, "--min-free 1Q: not a size; give bytes, or a number with K, M, G or T")

    def test_badNumber(self) -> None:
        """A negative timeout and a worker count that is not one are refused in one line each."""
        self.assertOneLine(self.twistd("--idle-timeout", "-3"), "--idle-timeout -3: give a number of 0 or more")
        self.assertOneLine(self.twistd("--workers", "many"), "--workers many: give a number of 1 or more, or auto")


class SizeTests(StartupTestCase):
    """
    Sizes with K, M, G and T (powers of 1024).
    """

    def test_suffixesServe(self) -> None:
        """--max-upload-size 1K and --min-free 1K start a server whose limit is 1024 bytes."""
        server = startServer(
            self, os.path.join(self.base, "root"), "--max-upload-size", "1K", "--min-free", "1K"
        )
        _, answer = exchange(server.port, "PUT", "/k/fits.bin", [("Content-Length", "1024")], b"x" * 1024)
        self.assertEqual(answer.status, 201, answer.raw)
        _, answer = exchange(server.port, "PUT", "/k/over.bin", [("Content-Length", "1025")], b"x" * 1025)
        self.assertEqual(answer.status, 413, answer.raw)

    def test_bigSuffixesAccepted(self) -> None:
        """10G and 1T parse (the server then starts; it is stopped at once)."""
        server = startServer(
            self, os.path.join(self.base, "root"), "--max-upload-size", "10G", "--min-free", "1T"
        )
        self.assertTrue(server.running())


class ListenErrorTests(StartupTestCase):
    """
    A port that is in use.
    """

    def occupied(self) -> int:
        """
        A loopback port that a socket of this test listens on.
        """
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port: int = sock.getsockname()[1]
        return port

    def test_portInUse(self) -> None:
        """A port in use is one line naming the address, and exit status 1."""
        port = self.occupied()
        result = self.twistd("--root", "root", "--listen", f"tcp:{port}:interface=127.0.0.1")
        self.assertOneLine(result, f"cannot listen on 127.0.0.1:{port}: address already in use")

    def test_portInUseWithWorkers(self) -> None:
        """With --workers too: the supervisor says it in one line and starts no worker."""
        port = self.occupied()
        result = self.twistd(
            "--root", "root", "--workers", "2", "--listen", f"tcp:{port}:interface=127.0.0.1"
        )
        self.assertOneLine(result, f"cannot listen on 127.0.0.1:{port}: address already in use")
        self.assertNotIn("worker 0 started", result.out)


class RootErrorTests(StartupTestCase):
    """
    A storage root that cannot be used.
    """

    def test_rootIsAFile(self) -> None:
        """--root naming a file is refused in one line, and the file is left alone."""
        path = os.path.join(self.base, "afile")
        with open(path, "w") as f:
            f.write("keep")
        self.assertOneLine(self.twistd("--root", path), f"--root {path}: not a folder")
        self.assertOneLine(
            self.twistd("--root", path, "--workers", "2"), f"--root {path}: not a folder"
        )
        with open(path) as f:
            self.assertEqual(f.read(), "keep")

    def test_foreignStateFolder(self) -> None:
        """
        A root whose state folder another user made (anyone who may write
        the root could) is refused in one line, and nothing is completed
        from it.
        """
        if os.geteuid() != 0:
            raise SkipTest("giving a folder to another user needs root (CI runs as root)")
        root = os.path.join(self.base, "shared")
        os.makedirs(os.path.join(root, ".uploadsvc"))
        os.chown(os.path.join(root, ".uploadsvc"), 65534, 65534)
        self.assertOneLine(
            self.twistd("--root", root), ".uploadsvc belongs to uid 65534, not to this server's"
        )

    def test_rootNotCreatable(self) -> None:
        """--root under a file cannot be created: one line says why."""
        path = os.path.join(self.base, "afile")
        open(path, "w").close()
        self.assertOneLine(
            self.twistd("--root", os.path.join(path, "sub")),
            f"cannot be created: {path} is not a folder",
        )

    def unwritable(self, path: str) -> None:
        """
        Make folder C{path} unwritable for the server (which runs as this
        user): by mode for a user, with the immutable attribute for root
        (whom modes do not stop).
        """
        if os.geteuid() != 0:
            os.chmod(path, 0o555)
            self.addCleanup(os.chmod, path, 0o755)
            return
        try:
            made = subprocess.run(["chattr", "+i", path], capture_output=True)
        except OSError as e:
            raise SkipTest(f"running as root and no chattr to make {path} immutable: {e}")
        if made.returncode != 0:
            raise SkipTest(f"running as root and cannot make {path} immutable: {made.stderr!r}")
        self.addCleanup(subprocess.run, ["chattr", "-i", path])

    def test_rootNotWritable(self) -> None:
        """A root the server may not write into, or whose parent it may not write into, is refused in one line."""
        root = os.path.join(self.base, "root")
        os.makedirs(root)
        self.unwritable(root)
        self.assertOneLine(self.twistd("--root", root), f"--root {root}: not writable by this user")
        self.assertOneLine(
            self.twistd("--root", os.path.join(root, "new")),
            f"cannot be created: {root} is not writable by this user",
        )
        self.assertEqual(os.listdir(root), [])


class HelpTests(StartupTestCase):
    """
    C{--help} of the server and of the tools.
    """

    def test_serverHelp(self) -> None:
        """--help fits 80 columns, splits no endpoint example, hides internal options and points at docs/protocol.md."""
        result = run([*TWISTD, "uploadsvc", "--help"], self.base)
        self.assertEqual(result.code, 0, result.err)
        lines = result.out.splitlines()
        self.assertEqual([line for line in lines if len(line) > 80], [])
        words = result.out.split()
        for example in (
            "tcp:8080:interface=127.0.0.1,",
            "ssl:8443:privateKey=k.pem:certKey=c.pem",
            "unix:/run/uploadsvc.sock",
            "Retry-After",
        ):
            self.assertIn(example, words)
        for hidden in ("--inherit", "--bench-write-rate", "--restart-delay"):
            self.assertNotIn(hidden, result.out)
        self.assertIn("docs/protocol.md", result.out)
        self.assertNotIn("PROTOCOL.md", result.out)
        self.assertIn("[default: 64G]", result.out)

    def test_toolsHelpPlain(self) -> None:
        """The signing tool's and the fault proxy's --help carry no epytext markup."""
        for module in ("uploadsvc.sign", "uploadsvc.testing.faultproxy"):
            result = run([sys.executable, "-m", module, "--help"], self.base)
            self.assertEqual(result.code, 0, result.err)
            self.assertIn("Options:", result.out)
            for markup in EPYTEXT:
                self.assertNotIn(markup, result.out, module)
            self.assertEqual([line for line in result.out.splitlines()[1:] if len(line) > 80], [])
