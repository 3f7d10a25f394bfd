"""
The log lines of uploadsvc: one per request (the access line) and one per
lifecycle event, through L{twisted.logger}, as text or as JSON lines
(C{--log-format json}).

Each such log event carries its fields as a dict under L{RECORD}; the text
observer of twistd writes its message, L{jsonLine} writes the fields. No
field holds a secret: paths without their query, the credential's name
(never the token), no header values.

Paths and names come from clients, so one log event stays one line for any
reader that splits lines (Python's C{splitlines()} splits on U+2028, U+2029,
U+0085 and others too) and shows what it is (no bidi control reorders it):
L{escapeText} escapes them in text lines, L{jsonLine} in JSON lines (as
JSON escapes, so the fields read back exactly).

JSON lines reach twistd's own log file: L{jsonFileObserver} opens the file
that twistd's C{--logfile} names the way twistd does (same rotation by size,
same C{SIGUSR1} rotation), and the service hands it to twistd as the
application's L{ILogObserver}, which twistd uses instead of its text one.

Text lines go the same way (L{textFileObserver}): the same lines as twistd's
own text observer, but the access and lifecycle lines, which come with their
text made (C{"{line}"}), skip C{string.Formatter} and the time is formatted
once a second. Under S4's load of small uploads, twistd's observer was a
quarter of the reactor's time in a cProfile of it (three lines per upload).
"""

from __future__ import annotations

import json
import re
import signal
import sys
import unicodedata
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python import logfile

from uploadsvc.ops.events import UploadEvent

#: The key of a log event that holds its JSON fields.
RECORD = "uploadsvc_record"

#: The formats of C{--log-format}.
FORMATS = ("text", "json")

accessLog = Logger(namespace="uploadsvc.access")
eventLog = Logger(namespace="uploadsvc.events")

#: Unicode categories never written raw: controls (C0, DEL, C1: line breaks
#: among them), format characters (bidi controls, zero-width ones), line and
#: paragraph separators, and lone surrogates (undecodable bytes).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

#: What L{escapeText} and L{jsonLine} look at: all but printable ASCII
#: (json.dumps escapes C0 controls, quotes and backslashes itself).
_CANDIDATES = re.compile(r"[^\x20-\x7e]")


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE_CATEGORIES


def _pythonEscape(match: re.Match[str]) -> str:
    c = match.group()
    if not _unsafe(c):
        return c
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escapeText(text: str) -> str:
    """
    C{text} for a text log line: every control, format character, line or
    paragraph separator and lone surrogate written as a Python-style escape
    (C{\\u2028}), so that it is one line that shows what it holds; other
    characters (printable non-ASCII too) as they are.

    Backslashes are left alone: the access line's combined log format
    already escapes its quoted fields with them (a text line can thus not
    tell a literal C{\\u2028} from an escaped one; a JSON line can).
    """
    return _CANDIDATES.sub(_pythonEscape, text)


def _jsonEscape(match: re.Match[str]) -> str:
    c = match.group()
    if not _unsafe(c):
        return c
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def logAccess(line: str, record: dict[str, Any], level: LogLevel = LogLevel.info) -> None:
    """
    Log one request: C{line} for text logs (escaped by L{escapeText}),
    C{record} for JSON ones.

    @param level: C{info}, unless the request needs a look (the server cut
        its answer short).
    """
    accessLog.emit(level, "{line}", line=escapeText(line), **{RECORD: {"type": "access", **record}})


def logEvent(event: UploadEvent) -> None:
    """
    Log one lifecycle event (an L{uploadsvc.ops.events.Events} listener).
    """
    fields = event.asDict()
    where = event.path if event.path is not None else event.uploadId or event.key
    record = {"type": "event", "event": fields.pop("kind"), **fields}
    more = f" {json.dumps(event.detail, sort_keys=True)}" if event.detail else ""
    # A tus or draft upload named by its path: its id too, which its
    # client and the tus/draft access lines know it by.
    named = (
        f", id {escapeText(event.uploadId)}"
        if event.uploadId is not None and event.path is not None else ""
    )
    line = (
        f"upload {event.kind}: {escapeText(str(where))} offset {_dash(event.offset)} of "
        f"{_dash(event.total)} (request {escapeText(str(_dash(event.requestId)))}, "
        f"credential {escapeText(str(_dash(event.credential)))}{named}){more}"
    )
    eventLog.emit(LogLevel.info, "{line}", line=line, **{RECORD: record})


def _dash(value: object) -> object:
    return "-" if value is None else value


def _time(event: dict[str, Any]) -> str:
    when = event.get("log_time")
    stamp = datetime.now(timezone.utc) if when is None else datetime.fromtimestamp(
        when, timezone.utc
    )
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonLine(event: dict[str, Any]) -> str | None:
    """
    One log event as a JSON line: the fields of an access or lifecycle
    line, or, for any other event, its level, namespace, message (and
    traceback).
    """
    record = event.get(RECORD)
    if isinstance(record, dict):
        out: dict[str, Any] = {"time": _time(event), **record}
    else:
        level = event.get("log_level")
        out = {
            "time": _time(event),
            "type": "log",
            "level": getattr(level, "name", None),
            "namespace": event.get("log_namespace"),
            "system": event.get("log_system"),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            try:
                out["traceback"] = failure.getTraceback()
            except Exception:
                out["traceback"] = repr(failure)
    # ensure_ascii=False keeps other text readable; JSON escapes only what
    # must not be raw (json.dumps already escapes C0 controls).
    text = json.dumps(out, default=str, ensure_ascii=False)
    return _CANDIDATES.sub(_jsonEscape, text) + "\n"


def _twistdLogFile(twistdOptions: Any) -> Any:
    """
    The file twistd would write its log to: C{--logfile} (rotated by size,
    and on C{SIGUSR1}), or standard output when twistd runs in the
    foreground without one (or with C{--logfile -}).
    """
    name = twistdOptions.get("logfile") or ""
    nodaemon = twistdOptions.get("nodaemon", False)
    if name == "-" or (nodaemon and not name):
        return sys.stdout
    out = logfile.LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(out.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return out


def jsonFileObserver(twistdOptions: Any) -> ILogObserver:
    """
    A JSON-lines observer writing where twistd would write its text log
    (L{_twistdLogFile}).

    @param twistdOptions: twistd's own options (the plugin options' parent).
    """
    return FileLogObserver(_twistdLogFile(twistdOptions), jsonLine)


#: A fraction of a second from which twistd's time (C{datetime}, rounded to
#: the microsecond) may be the next second's: made by twistd's own code.
_ROUNDS_UP = 0.999999


class ClassicText:
    """
    twistd's text line for a log event (L{formatEventAsClassicLogText} with
    its default time format), made cheaply for the lines that come with
    their text made (L{logAccess}, L{logEvent}: C{"{line}"}, no failure).

    @ivar _second: the whole second whose time text is in C{_stamp}.
    """

    def __init__(self, stamp: Callable[[float | None], str] = formatTime) -> None:
        self._format = stamp
        self._second: int | None = None
        self._stamp = ""

    def _time(self, when: float | None) -> str:
        if when is None:
            return self._format(None)
        second = int(when)
        if when < 0 or when - second >= _ROUNDS_UP:
            return self._format(when)  # (a time twistd rounds to the next second)
        if second != self._second:
            self._stamp = self._format(float(second))
            self._second = second
        return self._stamp

    def __call__(self, event: dict[str, Any]) -> str | None:
        if (
            event.get("log_format") != "{line}"
            or "log_failure" in event
            or "log_system" in event
            or not isinstance(event.get("line"), str)
        ):
            return formatEventAsClassicLogText(event, self._time)
        if not event["line"]:
            return None  # (as twistd writes nothing for an empty message)
        level = event.get("log_level")
        name = "-" if level is None else level.name
        line = event["line"].replace("\n", "\n\t")
        when = self._time(event.get("log_time"))
        return f"{when} [{event.get('log_namespace', '-')}#{name}] {line}\n"


def textFileObserver(twistdOptions: Any) -> ILogObserver:
    """
    The text observer twistd would make (same file, same lines), made
    cheaper by L{ClassicText}.

    @param twistdOptions: twistd's own options (the plugin options' parent).
    """
    return FileLogObserver(_twistdLogFile(twistdOptions), ClassicText())
