"""
L{uploadsvc.ops.hookcommand.CommandHook}: the process it starts, what it
feeds it, how it reads its answer, and the kill at the time limit; with a
fake process reactor and a L{Clock}, then with real programs.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from uploadsvc.ops.hookcommand import EXIT_GRACE, CommandHook
from uploadsvc.ops.hooks import HookFailed, Proceed, Refuse

PAYLOAD = json.dumps({"hook": "pre-create", "upload": {"path": "a/b.bin"}}).encode()


class FakeProcess:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.pid: int | None = 4242
        self.written = b""
        self.stdinClosed = False
        self.signals: list[str] = []
        self.lost = False

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def loseConnection(self) -> None:
        self.lost = True

    def exit(self, code: int, stdout: bytes = b"") -> None:
        """
        The process exits, but something it started still holds its pipes:
        no processEnded.
        """
        if stdout:
            self.protocol.outReceived(stdout)
        self.pid = None
        self.protocol.processExited(
            Failure(ProcessDone(0) if code == 0 else ProcessTerminated(code))
        )

    def end(self, code: int | None, stdout: bytes = b"", stderr: bytes = b"") -> None:
        if stdout:
            self.protocol.outReceived(stdout)
        if stderr:
            self.protocol.errReceived(stderr)
        self.pid = None
        if code == 0:
            reason = Failure(ProcessDone(0))
        elif code is None:
            reason = Failure(ProcessTerminated(None, 9))
        else:
            reason = Failure(ProcessTerminated(code))
        self.protocol.processEnded(reason)


class FakeProcessReactor:
    def __init__(self) -> None:
        self.spawned: list[tuple[str, list[str], dict[str, str]]] = []
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str]) -> FakeProcess:
        self.spawned.append((executable, args, env))
        process = FakeProcess(protocol)
        self.processes.append(process)
        protocol.makeConnection(process)
        return process


class CommandHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.reactor = FakeProcessReactor()
        self.hook = CommandHook(["/opt/hook", "--flag"], self.reactor, self.clock, 10.0, {"PATH": "/bin"})  # type: ignore[arg-type]

    def test_runs(self) -> None:
        """The program gets its arguments and the hook's name, the event on stdin, the name in its environment."""
        d = self.hook.call("pre-create", PAYLOAD)
        [(executable, args, env)] = self.reactor.spawned
        self.assertEqual(executable, "/opt/hook")
        self.assertEqual(args, ["/opt/hook", "--flag", "pre-create"])
        self.assertEqual(env, {"PATH": "/bin", "UPLOADSVC_HOOK": "pre-create"})
        process = self.reactor.processes[0]
        self.assertEqual(process.written, PAYLOAD)
        self.assertTrue(process.stdinClosed)
        self.assertNoResult(d)
        process.end(0, b'{"status": 403, "reason": "no"}')
        self.assertEqual(self.successResultOf(d), Refuse(403, "no"))

    def test_exit0Empty(self) -> None:
        """Exit status 0 with nothing on stdout goes on."""
        d = self.hook.call("pre-finish", PAYLOAD)
        self.reactor.processes[0].end(0)
        self.assertEqual(self.successResultOf(d), Proceed())

    def test_failure(self) -> None:
        """A non-zero exit without a refusal fails, its reason quoting stderr."""
        d = self.hook.call("pre-finish", PAYLOAD)
        self.reactor.processes[0].end(3, b"", b"database\nunreachable")
        failure = self.failureResultOf(d, HookFailed)
        self.assertIn("status 3", failure.value.reason)
        self.assertIn("database unreachable", failure.value.reason)

    def test_timeoutKills(self) -> None:
        """At the time limit the process is killed by its PID and the call fails."""
        d = self.hook.call("pre-create", PAYLOAD)
        process = self.reactor.processes[0]
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.assertEqual(process.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(process.signals, ["KILL"])
        self.assertTrue(process.lost)
        failure = self.failureResultOf(d, HookFailed)
        self.assertIn("within 10 s", failure.value.reason)
        process.end(None)  # the end of the killed process changes nothing

    def test_endedCancelsTimer(self) -> None:
        """A process that answers in time is never signalled."""
        d = self.hook.call("pre-create", PAYLOAD)
        self.reactor.processes[0].end(0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exitedPipesHeld(self) -> None:
        """
        A program that exits while a process it left behind holds its
        stdout is answered by what it wrote, a moment after its exit: our
        ends of its pipes are closed, and nothing is signalled (the program
        is gone; the other process is not ours).
        """
        d = self.hook.call("pre-create", PAYLOAD)
        process = self.reactor.processes[0]
        self.clock.advance(2)
        process.exit(0, b'{"status": 403, "reason": "no"}')
        self.clock.advance(EXIT_GRACE * 0.9)
        self.assertNoResult(d)
        self.assertFalse(process.lost)
        self.clock.advance(EXIT_GRACE * 0.1)
        self.assertEqual(self.successResultOf(d), Refuse(403, "no"))
        self.assertTrue(process.lost)
        self.assertEqual(process.signals, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        process.protocol.processEnded(Failure(ProcessDone(0)))  # changes nothing

    def test_exitedPipesHeldPastTheLimit(self) -> None:
        """An exit just before the time limit still gets its moment (the limit is not a kill then)."""
        d = self.hook.call("pre-create", PAYLOAD)
        process = self.reactor.processes[0]
        self.clock.advance(9.9)
        process.exit(3)
        self.clock.advance(EXIT_GRACE)
        failure = self.failureResultOf(d, HookFailed)
        self.assertIn("status 3", failure.value.reason)
        self.assertEqual(process.signals, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exitedThenEnded(self) -> None:
        """A program whose pipes close right after its exit is answered at once."""
        d = self.hook.call("pre-create", PAYLOAD)
        process = self.reactor.processes[0]
        process.exit(0, b'{"status": 403, "reason": "no"}')
        process.protocol.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(self.successResultOf(d), Refuse(403, "no"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tooLong(self) -> None:
        """More stdout than an answer may hold is a failure."""
        d = self.hook.call("pre-create", PAYLOAD)
        self.reactor.processes[0].end(0, b" " * (70 * 1024))
        self.failureResultOf(d, HookFailed)


SCRIPT = r'''
import json, os, sys, time
event = json.load(sys.stdin)
mode = sys.argv[1]
with open(sys.argv[2], "w") as f:
    json.dump({"event": event, "argv": sys.argv[3:], "env": os.environ.get("UPLOADSVC_HOOK"),
               "pid": os.getpid()}, f)
if mode == "refuse":
    print(json.dumps({"status": 451, "reason": "refused for " + event["upload"]["path"]}))
elif mode == "fail":
    sys.stderr.write("cannot reach the database\n")
    sys.exit(2)
elif mode == "garbage":
    print("yes please")
elif mode == "slow":
    time.sleep(120)
elif mode == "background":
    # Leaves a process behind that holds this one's stdout and stderr.
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(sys.argv[2] + ".child", "w") as f:
        f.write(str(child.pid))
    print(json.dumps({"status": 451, "reason": "refused in the foreground"}))
'''


class RealCommandTests(TestCase):
    """
    A real Python program as the hook, on the real reactor.
    """

    timeout = 60

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.script = os.path.join(self.dir, "hook.py")
        with open(self.script, "w") as f:
            f.write(SCRIPT)
        self.record = os.path.join(self.dir, "record.json")

    def hook(self, mode: str, timeout: float = 30.0) -> CommandHook:
        return CommandHook([sys.executable, self.script, mode, self.record], reactor, reactor, timeout)

    def recorded(self) -> dict[str, Any]:
        with open(self.record) as f:
            return json.load(f)  # type: ignore[no-any-return]

    async def test_refuses(self) -> None:
        """The program reads the event on stdin and refuses on stdout."""
        decision = await self.hook("refuse").call("pre-create", PAYLOAD)
        self.assertEqual(decision, Refuse(451, "refused for a/b.bin"))
        seen = self.recorded()
        self.assertEqual(seen["event"], json.loads(PAYLOAD))
        self.assertEqual(seen["argv"], ["pre-create"])
        self.assertEqual(seen["env"], "pre-create")

    async def test_proceeds(self) -> None:
        """A program that prints nothing and exits 0 lets the upload go on."""
        self.assertEqual(await self.hook("ok").call("pre-finish", PAYLOAD), Proceed())

    async def test_fails(self) -> None:
        """A program that exits 2 is a failure that quotes its stderr."""
        with self.assertRaises(HookFailed) as caught:
            await self.hook("fail").call("pre-finish", PAYLOAD)
        self.assertIn("status 2", caught.exception.reason)
        self.assertIn("cannot reach the database", caught.exception.reason)

    async def test_garbage(self) -> None:
        """A program that prints something other than an answer is a failure."""
        with self.assertRaises(HookFailed):
            await self.hook("garbage").call("pre-create", PAYLOAD)

    async def test_slowKilled(self) -> None:
        """A program still running at the time limit is killed: its process is gone."""
        with self.assertRaises(HookFailed) as caught:
            await self.hook("slow", timeout=3.0).call("pre-create", PAYLOAD)
        self.assertIn("killed", caught.exception.reason)
        pid = self.recorded()["pid"]
        # Reaped by the reactor once it dies: poll (bounded) for it to go.
        from twisted.internet.task import deferLater

        for _ in range(200):
            if not os.path.exists(f"/proc/{pid}") or _isZombie(pid):
                break
            await deferLater(reactor, 0.05)
        self.assertTrue(not os.path.exists(f"/proc/{pid}") or _isZombie(pid))

    async def test_backgroundChildLeftBehind(self) -> None:
        """
        A program that answers and exits, leaving a process behind that
        holds its stdout, is answered by what it wrote, well before the time
        limit; the process it left is not killed by us.
        """
        hook = self.hook("background", timeout=20.0)
        try:
            decision = await hook.call("pre-create", PAYLOAD)
            self.assertEqual(decision, Refuse(451, "refused in the foreground"))
            with open(self.record + ".child") as f:
                child = int(f.read())
            self.assertTrue(os.path.exists(f"/proc/{child}") and not _isZombie(child))
        finally:
            if os.path.exists(self.record + ".child"):
                with open(self.record + ".child") as f:
                    os.kill(int(f.read()), 9)  # the test's own leftover, by its PID

    async def test_missingProgram(self) -> None:
        """A program that cannot be started is a failure, not a crash."""
        hook = CommandHook([os.path.join(self.dir, "nothing-here")], reactor, reactor, 5.0)
        with self.assertRaises(HookFailed):
            await hook.call("pre-create", PAYLOAD)


def _isZombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
