"""
C{uploadsvc-upload FILE... URL}: the command-line client.

Exit status: 0 when every file made it (skipped dot-files aside), 1 when any
failed, 2 for a usage or configuration error.
"""

from __future__ import annotations

import os
import random
import re
import sys
from typing import IO, Any, Sequence
from urllib.parse import urlsplit

from twisted.internet.task import Cooperator, react
from twisted.python import usage

from uploadsvc import commandline
from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import (
    ConfigError,
    authorizationHeaders,
    checkSendable,
    makeHTTPClient,
    splitCredentials,
)
from uploadsvc.client.plan import PlanError, planUploads
from uploadsvc.client.progress import LineDisplay, ProgressDisplay, formatSummary
from uploadsvc.client.uploader import PROTOCOLS, Uploader

_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)(i?[bB])?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parseSize(text: str) -> int:
    """
    A byte count such as C{4096}, C{256K} or C{8MiB} (powers of 1024).

    @raise ValueError: when it is not one, or is zero.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError("the size must be positive")
    return value


def _nonNegative(kind: type) -> Any:
    def convert(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise ValueError("must not be negative")
        return value

    return convert


class Options(commandline.Options):
    """
    Command-line options of C{uploadsvc-upload} (whole option names only:
    C{--par 2} is no C{--parallel 2}).
    """

    synopsis = "Usage: uploadsvc-upload [options] FILE... URL"
    longdesc = (
        "Upload files (or directory trees) to an uploadsvc server, resuming "
        "after every dropped, stalled or reset connection. When URL ends with /, "
        "each FILE goes to URL + its name and a directory goes with its tree. "
        "The bearer token is read from --token-file or $UPLOADSVC_TOKEN; "
        "credentials in the URL (https://user:password@host/...) are sent as "
        "HTTP Basic instead. Certificates are always verified."
    )
    optFlags = [["quiet", "q", "No progress display (the summary is still printed)."]]
    optParameters = [
        ["parallel", "p", 4, "Files uploaded at the same time.", int],
        ["chunk-size", None, None, "Bytes per request, e.g. 8M (default: one request per attempt).", parseSize],
        ["cacert", None, None, "PEM file of CA certificates to trust instead of the system's."],
        ["token-file", None, None, "File holding the bearer token (default: $UPLOADSVC_TOKEN)."],
        ["stall-timeout", None, 30.0, "Seconds without progress before an attempt is abandoned.", float],
        ["max-attempts", None, 10, "Failed attempts in a row, without progress, before giving up (0: never).", _nonNegative(int)],
        ["give-up-after", None, None, "Seconds without progress before giving up (default: no limit).", _nonNegative(float)],
        ["retry-delay", None, 0.5, "Seconds before the first retry; doubles per failure.", _nonNegative(float)],
        ["max-retry-delay", None, 30.0, "The longest wait between attempts, in seconds.", _nonNegative(float)],
        ["protocol", None, "put",
         "put (path URLs resumed with Content-Range), tus (URL is the tus endpoint "
         "<server>/.tus/, then the folder or file name to upload to) or ietf (the IETF "
         "resumable-upload draft: path URLs, or <server>/.uploads/ then the folder or file name)."],
    ]

    def parseArgs(self, *args: str) -> None:
        if len(args) < 2:
            raise usage.UsageError("give at least one FILE and a URL")
        self["sources"] = list(args[:-1])
        self["url"] = args[-1]

    def postOptions(self) -> None:
        if self["parallel"] < 1:
            raise usage.UsageError("--parallel must be at least 1")
        if self["stall-timeout"] <= 0:
            raise usage.UsageError("--stall-timeout must be positive")
        if self["protocol"] not in PROTOCOLS:
            raise usage.UsageError("--protocol must be put, tus or ietf")
        if self["protocol"] == "tus" and "/.tus/" not in urlsplit(self["url"]).path:
            raise usage.UsageError(
                "with --protocol tus the URL names the tus endpoint: <server>[/prefix]/.tus/"
            )

    def retryPolicy(self) -> RetryPolicy:
        """
        The retry policy the options ask for.
        """
        return RetryPolicy(
            initialDelay=self["retry-delay"],
            maxDelay=max(self["max-retry-delay"], self["retry-delay"]),
            maxAttempts=self["max-attempts"] or None,
            giveUpAfter=self["give-up-after"],
        )


async def run(
    reactor: Any,
    argv: Sequence[str],
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """
    Run the client with C{argv} (without the program name) on C{reactor}.

    @return: the exit status.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    options = Options()
    try:
        options.parseOptions(list(argv))
        # From here on only the URL without its password is used.
        url, basic = splitCredentials(options["url"])
        checkSendable(url)
        plan = planUploads(options["sources"], url)
        headers = authorizationHeaders(
            options["token-file"], os.environ if environ is None else environ
        )
        if basic and headers:
            raise ConfigError(
                "credentials in the URL and a bearer token (--token-file or"
                " $UPLOADSVC_TOKEN) cannot both be sent; give one of them"
            )
        headers.update(basic)
        connection = makeHTTPClient(
            reactor, caFile=options["cacert"], maxPerHost=options["parallel"]
        )
    except usage.UsageError as e:
        # The reason first, not after a screen of help.
        err.write(
            f"uploadsvc-upload: {commandline.plainError(str(e))}\n{Options.synopsis}\n"
            "Run 'uploadsvc-upload --help' for the options.\n"
        )
        return 2
    except (PlanError, ConfigError) as e:
        err.write(f"uploadsvc-upload: {e}\n")
        return 2
    if options["quiet"]:
        display: Any = None
    elif err.isatty():
        totalBytes = sum(os.path.getsize(job.path) for job in plan.jobs)
        display = ProgressDisplay(totalBytes, len(plan.jobs), err)
    else:
        display = LineDisplay(err)
    cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
    uploader = Uploader(
        connection.http,
        reactor,
        cooperator,
        retry=options.retryPolicy(),
        chunkSize=options["chunk-size"],
        stallTimeout=options["stall-timeout"],
        headers=headers,
        observer=display,
        rng=random.Random(),
        protocol=options["protocol"],
    )
    started = reactor.seconds()
    try:
        results = await uploader.uploadMany(plan.jobs, options["parallel"])
    finally:
        if display is not None:
            display.close()
        cooperator.stop()
        await connection.close()
    out.write(formatSummary(results, plan.skipped, reactor.seconds() - started) + "\n")
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> None:
    """
    The C{uploadsvc-upload} console script.
    """
    args = list(sys.argv[1:] if argv is None else argv)

    def start(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        async def go() -> None:
            status = await run(reactor, args)
            if status:
                raise SystemExit(status)

        return Deferred.fromCoroutine(go())

    react(start)


if __name__ == "__main__":
    main()
