"""
Command hooks: run a program with the event document on its stdin; its
exit status and stdout are its answer. A program still running at the time
limit is killed (the process this started, by its PID).

The answer is complete when the program has exited and its pipes are
closed. A program may exit while a process it started in the background
still holds its stdout: then, L{EXIT_GRACE} after the exit, our ends of the
pipes are closed and the answer is what it wrote by then (the process left
behind is not ours to kill, and no PID of it is known).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from uploadsvc.ops.hooks import (
    MAX_ANSWER_BYTES,
    Decision,
    HookFailed,
    oneLine,
    parseCommandAnswer,
)

#: How much of a command's stderr is kept (logged as one line).
MAX_STDERR_BYTES = 4096

#: Seconds after a program's exit that its pipes may stay open (output
#: still on its way) before what it wrote is taken as its answer.
EXIT_GRACE = 1.0

log = Logger()


class _HookProcess(ProcessProtocol):
    """
    Feeds one run of a hook command its event and keeps what it answers.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.stdout: list[bytes] = []
        self.stdoutSize = 0
        self.stderr = b""
        self.tooLong = False
        #: Fires with the exit status (L{None}: killed by a signal) when
        #: the program exits.
        self.exited: Deferred[int | None] = Deferred()
        #: Fires when, besides, every pipe to it is closed.
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.stdoutSize += len(data)
        if self.stdoutSize > MAX_ANSWER_BYTES:
            self.tooLong = True
            self.stdout = []
            return
        self.stdout.append(data)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[:MAX_STDERR_BYTES]

    def processExited(self, reason: Failure) -> None:
        if not self.exited.called:
            self.exited.callback(_exitStatus(reason))

    def processEnded(self, reason: Failure) -> None:
        self.processExited(reason)
        if not self.ended.called:
            self.ended.callback(None)


def _exitStatus(reason: Failure) -> int | None:
    """
    The exit status a process ended with; L{None} if a signal ended it.
    """
    if reason.check(ProcessDone):
        return 0
    if getattr(reason.value, "signal", None) is not None:
        return None
    return getattr(reason.value, "exitCode", None)


class CommandHook:
    """
    Runs one program for every hook event: C{argv} plus the hook's name as
    its last argument, the event document on stdin, C{UPLOADSVC_HOOK} in
    its environment.
    """

    kind = "command"

    def __init__(
        self,
        argv: Sequence[str],
        reactor: IReactorProcess,
        clock: IReactorTime,
        timeout: float,
        environment: dict[str, str] | None = None,
        exitGrace: float = EXIT_GRACE,
    ) -> None:
        """
        @param argv: the program and its first arguments (no shell).
        @param environment: the program's environment (this process's if
            L{None}).
        @param exitGrace: seconds its pipes may stay open after it exits.
        """
        self.argv = list(argv)
        self.shown = " ".join(self.argv)
        self._reactor = reactor
        self._clock = clock
        self._timeout = timeout
        self._environment = environment
        self._exitGrace = exitGrace

    def call(self, hook: str, payload: bytes) -> Deferred[Decision]:
        """
        Run the program for C{hook}; fire with its decision.

        @return: fails with L{HookFailed} when there is none.
        """
        env = dict(os.environ if self._environment is None else self._environment)
        env["UPLOADSVC_HOOK"] = hook
        protocol = _HookProcess(payload)
        result: Deferred[Decision] = Deferred()
        try:
            transport = self._reactor.spawnProcess(
                protocol, self.argv[0], [*self.argv, hook], env=env
            )
        except OSError as e:
            result.errback(HookFailed(f"cannot start: {e.strerror or e}"))
            return result

        def timedOut() -> None:
            _kill(transport)
            if not result.called:
                result.errback(
                    HookFailed(f"no answer within {self._timeout:g} s: killed")
                )

        timer = self._clock.callLater(self._timeout, timedOut)

        def exited(code: int | None) -> None:
            # Gone: the time limit kills nothing any more.
            if timer.active():
                timer.cancel()
            if result.called:
                return
            grace = self._clock.callLater(self._exitGrace, pipesHeld, code)

            def pipesClosed(_: None) -> None:
                if grace.active():
                    grace.cancel()
                answer(code)

            protocol.ended.addCallback(pipesClosed)

        def pipesHeld(code: int | None) -> None:
            log.info(
                "{hook} hook ({command}) exited, but a process it left behind holds its "
                "output: answering with what it wrote by then",
                hook=hook, command=self.shown,
            )
            transport.loseConnection()  # our ends of its pipes
            answer(code)

        def answer(code: int | None) -> None:
            if result.called:
                return
            if protocol.tooLong:
                result.errback(
                    HookFailed(f"answer longer than {MAX_ANSWER_BYTES} bytes")
                )
                return
            try:
                decision = parseCommandAnswer(hook, code, b"".join(protocol.stdout))
            except HookFailed as e:
                said = oneLine(protocol.stderr.decode("utf-8", "replace"))
                result.errback(
                    HookFailed(e.reason + (f" (stderr: {said})" if said else ""))
                )
                return
            said = oneLine(protocol.stderr.decode("utf-8", "replace"), MAX_STDERR_BYTES)
            if said:
                log.info("{hook} hook ({command}) said: {said}", hook=hook, command=self.shown, said=said)
            result.callback(decision)

        protocol.exited.addCallback(exited)
        return result


def _kill(transport: Any) -> None:
    """
    Kill the hook process this started (by its PID), if it still runs, and
    close our ends of its pipes so that a child it left behind holding
    them cannot keep anything waiting.
    """
    if getattr(transport, "pid", None) is not None:
        try:
            transport.signalProcess("KILL")
        except Exception:
            pass  # it ended meanwhile
    transport.loseConnection()
