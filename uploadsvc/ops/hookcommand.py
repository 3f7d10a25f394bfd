"""
Command hooks: run a program with the event document on its stdin; its
exit status and stdout are its answer. A program still running at the time
limit is killed (the process this started, by its PID).
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
        self.ended: Deferred[int | None] = Deferred()

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

    def processEnded(self, reason: Failure) -> None:
        code: int | None
        if reason.check(ProcessDone):
            code = 0
        else:
            code = getattr(reason.value, "exitCode", None)
            if getattr(reason.value, "signal", None) is not None:
                code = None
        if not self.ended.called:
            self.ended.callback(code)


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
    ) -> None:
        """
        @param argv: the program and its first arguments (no shell).
        @param environment: the program's environment (this process's if
            L{None}).
        """
        self.argv = list(argv)
        self.shown = " ".join(self.argv)
        self._reactor = reactor
        self._clock = clock
        self._timeout = timeout
        self._environment = environment

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

        def ended(code: int | None) -> None:
            if timer.active():
                timer.cancel()
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

        protocol.ended.addCallback(ended)
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
