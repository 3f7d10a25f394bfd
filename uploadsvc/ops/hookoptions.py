"""
The command-line options of hooks (C{--hook-url}, C{--hook-command},
C{--hooks}, ...), their checks, and the L{Hooks} they make: kept here so
that C{uploadsvc.tap} only lists them.
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.python import usage

from uploadsvc.commandline import countOption
from uploadsvc.ops.events import Events
from uploadsvc.ops.hookrunner import DEFAULT_BACKOFF, DEFAULT_RETRIES, Hooks, HookService
from uploadsvc.ops.hooks import ALL_HOOKS, parseHookList
from uploadsvc.web.auth import SecretFile, SecretFileError, readSecrets

DEFAULT_TIMEOUT = 10.0

HOOK_PARAMETERS: list[list[Any]] = [
    ["hook-url", None, None,
     "POST hook events (JSON) to this http:// or https:// URL (docs/operating.md); "
     "no user:password@ in it (see --hook-secret-file)."],
    ["hook-command", None, None,
     "Run this program for hook events: the event (JSON) on stdin, the hook's name as "
     "its last argument; words split as a shell would, but no shell runs it."],
    ["hooks", None, "all",
     "The hooks that run, comma-separated (" + ", ".join(ALL_HOOKS) + "), or all."],
    ["hook-timeout", None, DEFAULT_TIMEOUT,
     "Seconds a hook has to answer; a blocking hook that does not answers 503.",
     countOption("hook-timeout", float)],
    ["hook-retries", None, DEFAULT_RETRIES,
     "New tries of a notification (post-*) that failed, with doubling delays.",
     countOption("hook-retries")],
    ["hook-backoff", None, DEFAULT_BACKOFF,
     "Seconds before the first new try of a notification (doubled for each next one).",
     countOption("hook-backoff", float)],
    ["hook-secret-file", None, None,
     "File whose first secret line (16 characters or more) is sent as the "
     "Uploadsvc-Hook-Secret header of HTTP hooks. Re-read on change."],
]


def checkHookOptions(options: Any) -> None:
    """
    Refuse hook options that cannot work, in one line each.

    @raise usage.UsageError: saying which.
    """
    url, command = options["hook-url"], options["hook-command"]
    if url is not None:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Not repeated: the message reaches terminals and logs.
            raise usage.UsageError(
                "--hook-url: give no user name or password in the URL "
                "(send a secret with --hook-secret-file)"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(f"--hook-url {url}: give an http:// or https:// URL")
        try:
            parts.port
        except ValueError:
            raise usage.UsageError(f"--hook-url {url}: bad port") from None
    if command is not None:
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise usage.UsageError(f"--hook-command: {e}") from None
        if not argv:
            raise usage.UsageError("--hook-command: give a program")
        found = shutil.which(argv[0])
        if found is None:
            raise usage.UsageError(
                f"--hook-command: {argv[0]} is not an executable file"
                + ("" if os.sep in argv[0] else " on PATH")
            )
        options["hook-argv"] = [found, *argv[1:]]
    try:
        options["hook-names"] = parseHookList(options["hooks"])
    except ValueError as e:
        raise usage.UsageError(f"--hooks {options['hooks']}: {e}") from None
    given = url is not None or command is not None
    if not given:
        for name, _, default, *_ in HOOK_PARAMETERS:
            if default is not None and options[name] != default:
                raise usage.UsageError(f"--{name}: give --hook-url and/or --hook-command too")
    secretFile = options["hook-secret-file"]
    if secretFile is not None:
        if url is None:
            raise usage.UsageError("--hook-secret-file: only HTTP hooks send it; give --hook-url")
        try:
            if not readSecrets(secretFile):
                raise SecretFileError(f"{secretFile} holds no secret of 16 characters or more")
        except SecretFileError as e:
            raise usage.UsageError(f"--hook-secret-file: {e}") from None
    if options["hook-timeout"] <= 0:
        raise usage.UsageError("--hook-timeout must be above 0")
    idle = options["idle-timeout"]
    if given and idle and options["hook-timeout"] >= idle:
        raise usage.UsageError(
            f"--hook-timeout {options['hook-timeout']:g} must be below --idle-timeout {idle:g}: "
            "a client waiting for a blocking hook would be cut off first"
        )


def makeHooks(options: Any, reactor: Any, events: Events, parent: Any) -> Hooks | None:
    """
    The hooks the options ask for, listening to C{events} and stopped with
    C{parent}; L{None} when none is configured.
    """
    targets: list[Any] = []
    timeout = options["hook-timeout"]
    if options["hook-command"] is not None:
        # Imported only when a hook is configured (the idle server's memory).
        from uploadsvc.ops.hookcommand import CommandHook

        targets.append(CommandHook(options["hook-argv"], reactor, reactor, timeout))
    if options["hook-url"] is not None:
        secret: Callable[[], bytes | None] | None = None
        if options["hook-secret-file"] is not None:
            try:
                secretFile: SecretFile[bytes] = SecretFile(options["hook-secret-file"], reactor)
            except SecretFileError as e:
                raise usage.UsageError(f"--hook-secret-file: {e}") from None

            def secret() -> bytes | None:
                current = secretFile.current()
                return current[0] if current else None

        from uploadsvc.ops.hookhttp import HTTPHook, newClient

        targets.append(HTTPHook(options["hook-url"], newClient(reactor), reactor, timeout, secret))
    if not targets:
        return None
    hooks = Hooks(
        targets, options["hook-names"], reactor,
        retries=options["hook-retries"], backoff=options["hook-backoff"],
    )
    hooks.listenTo(events)
    HookService(hooks).setServiceParent(parent)
    return hooks

