"""
The hook options of C{twistd uploadsvc} (L{uploadsvc.ops.hookoptions}):
listed in --help, checked when parsed with one clear line, passed to
workers, and turned into L{Hooks} by makeService on a memory reactor.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.ops.hookcommand import CommandHook
from uploadsvc.ops.hookhttp import HTTPHook
from uploadsvc.ops.hookrunner import HookService
from uploadsvc.ops.hooks import ALL_HOOKS
from uploadsvc.tap import Options, makeService
from tests.support.server import REPO_ROOT, TWISTD

HOOK_OPTIONS = [
    "hook-url", "hook-command", "hooks", "hook-timeout", "hook-retries", "hook-backoff",
    "hook-secret-file",
]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class HookOptionsTests(SynchronousTestCase):
    def secretFile(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_documented(self) -> None:
        """Every hook option is in --help."""
        usage = str(Options())
        for name in HOOK_OPTIONS:
            self.assertIn("--" + name, usage)

    def test_defaults(self) -> None:
        """Without hook options no hook runs; with a URL all six are on, 10 s, 3 retries from 1 s."""
        options = parse()
        self.assertIsNone(options["hook-url"])
        self.assertIsNone(options["hook-command"])
        options = parse("--hook-url", "http://127.0.0.1:9000/hooks")
        self.assertEqual(options["hook-names"], frozenset(ALL_HOOKS))
        self.assertEqual(
            (options["hook-timeout"], options["hook-retries"], options["hook-backoff"]),
            (10.0, 3, 1.0),
        )

    def test_values(self) -> None:
        """The options are read as given."""
        secret = self.secretFile("# hook secret\n" + "k" * 32 + "\n")
        options = parse(
            "--hook-url", "https://hooks.example/in", "--hook-command", f"{sys.executable} -u hook.py",
            "--hooks", "pre-create,post-finish", "--hook-timeout", "2.5", "--hook-retries", "5",
            "--hook-backoff", "0.5", "--hook-secret-file", secret,
        )
        self.assertEqual(options["hook-names"], {"pre-create", "post-finish"})
        self.assertEqual(options["hook-argv"], [sys.executable, "-u", "hook.py"])
        self.assertEqual(
            (options["hook-timeout"], options["hook-retries"], options["hook-backoff"]),
            (2.5, 5, 0.5),
        )

    def test_errors(self) -> None:
        """Each mistake is refused with one line that names the option."""
        missing = os.path.abspath(self.mktemp())
        short = self.secretFile("short\n")
        cases = [
            (["--hook-url", "ftp://x/y"], "--hook-url ftp://x/y: give an http:// or https:// URL"),
            (["--hook-url", "http:///nohost"], "--hook-url http:///nohost: give an http"),
            (["--hook-url", "http://h:99999/"], "--hook-url http://h:99999/: bad port"),
            (["--hook-command", missing], f"--hook-command: {missing} is not an executable file"),
            (["--hook-command", "no-such-program-here"], "is not an executable file on PATH"),
            (["--hook-command", "'unclosed"], "--hook-command: No closing quotation"),
            (["--hook-url", "http://h/", "--hooks", "pre-create,post-recieve"],
             "--hooks pre-create,post-recieve: unknown hook 'post-recieve'"),
            (["--hooks", "pre-create"], "--hooks: give --hook-url and/or --hook-command too"),
            (["--hook-timeout", "3"], "--hook-timeout: give --hook-url and/or --hook-command too"),
            (["--hook-retries", "9"], "--hook-retries: give --hook-url and/or --hook-command too"),
            (["--hook-secret-file", short], "--hook-secret-file: only HTTP hooks send it"),
            (["--hook-url", "http://h/", "--hook-secret-file", short],
             "--hook-secret-file: " + short + " holds no secret"),
            (["--hook-url", "http://h/", "--hook-secret-file", missing],
             f"--hook-secret-file: cannot read {missing}"),
            (["--hook-url", "http://h/", "--hook-timeout", "0"], "--hook-timeout must be above 0"),
            (["--hook-url", "http://h/", "--hook-timeout", "soon"], "--hook-timeout soon: give a number"),
            (["--hook-url", "http://h/", "--hook-retries", "-1"], "--hook-retries -1: give a number"),
            (["--hook-url", "http://h/", "--hook-timeout", "90"],
             "--hook-timeout 90 must be below --idle-timeout 60"),
        ]
        for argv, message in cases:
            error = self.assertRaises(UsageError, parse, *argv)
            self.assertIn(message, str(error), argv)
            self.assertNotIn("\n", str(error))

    def test_userInfoRefused(self) -> None:
        """
        A --hook-url with a user name or password is refused in one line
        that does not repeat it (the secret belongs in --hook-secret-file).
        """
        for url in (
            "http://hookuser:hookPASSWORD@127.0.0.1:9/h", "https://hookuser@h/", "http://@h/",
            "http://:hookPASSWORD@h/", "ftp://hookuser:hookPASSWORD@h/",
            "http://hookuser:hookPASSWORD@h:99999/",
        ):
            with self.subTest(url=url):
                error = str(self.assertRaises(UsageError, parse, "--hook-url", url))
                self.assertEqual(
                    error,
                    "--hook-url: give no user name or password in the URL "
                    "(send a secret with --hook-secret-file)",
                )
                self.assertNotIn("hookPASSWORD", error)
                self.assertNotIn("hookuser", error)

    def test_workers(self) -> None:
        """Workers get the hook options too."""
        options = parse(
            "--workers", "2", "--hook-url", "http://127.0.0.1:9/h", "--hooks", "post-finish",
            "--hook-timeout", "3",
        )
        arguments = options.workerArguments()
        self.assertIn("--hook-url=http://127.0.0.1:9/h", arguments)
        self.assertIn("--hooks=post-finish", arguments)
        self.assertIn("--hook-timeout=3.0", arguments)
        parse(*arguments)  # and they parse


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()

    def hookServices(self, *argv: str) -> list[HookService]:
        svc = makeService(parse("--root", self.root, *argv), self.reactor)
        return [child for child in svc if isinstance(child, HookService)]

    def test_none(self) -> None:
        """Without hook options there are no hooks."""
        self.assertEqual(self.hookServices(), [])

    def test_both(self) -> None:
        """A command and a URL give two targets, the command first, listening for events."""
        [service] = self.hookServices(
            "--hook-url", "http://127.0.0.1:9/h", "--hook-command", sys.executable,
            "--hooks", "pre-finish,post-expire",
        )
        targets = service.hooks._targets
        self.assertEqual([type(t) for t in targets], [CommandHook, HTTPHook])
        self.assertTrue(service.hooks.runs("pre-finish"))
        self.assertFalse(service.hooks.runs("pre-create"))
        self.assertIsNotNone(service.hooks._events)


class CommandLineTests(SynchronousTestCase):
    def test_oneLine(self) -> None:
        """On the twistd command line a bad hook option ends the start with one line, no traceback."""
        root = os.path.abspath(self.mktemp())
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "uploadsvc", "--root", root, "--hook-url", "gopher://x"],
            capture_output=True, text=True, env=env, timeout=60, cwd=REPO_ROOT,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip().splitlines(),
            ["twistd uploadsvc: --hook-url gopher://x: give an http:// or https:// URL; see --help"],
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
