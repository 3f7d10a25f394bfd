"""
What the project's command lines share: sizes with units, option errors in
plain words, and a C{--help} that lists only public options and wraps
between words (Twisted's own wrapping splits an endpoint string or a
hyphenated word at the margin, and lists every option).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from typing import Any, Callable, Sequence

from twisted.python import usage

#: A byte count: digits, then maybe K, M, G or T (powers of 1024), maybe
#: followed by B or iB (C{10G}, C{10GB} and C{10GiB} are the same).
_SIZE = re.compile(r"([0-9]{1,20})(?:([KMGT])(?:I?B)?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parseSize(text: str) -> int:
    """
    A byte count such as C{1048576}, C{256K}, C{10G} or C{2TiB}: K, M, G and
    T are powers of 1024, as in the client's C{--chunk-size}.

    @raise ValueError: for anything else.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


def formatSize(size: int) -> str:
    """
    C{size} in the largest unit of L{parseSize} that writes it exactly.
    """
    for unit in ("T", "G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def sizeOption(name: str) -> Callable[[str], int]:
    """
    The coerce function of a size option C{--name}, whose error names it.
    """

    def coerce(text: str) -> int:
        try:
            return parseSize(text)
        except ValueError:
            raise usage.UsageError(
                f"--{name} {text}: not a size; give bytes, or a number with K, M, "
                "G or T (powers of 1024), e.g. 10G"
            ) from None

    coerce.coerceDoc = "Bytes, or K, M, G or T (powers of 1024), e.g. 10G."  # type: ignore[attr-defined]
    return coerce


def countOption(name: str, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """
    The coerce function of option C{--name}: a finite number of C{kind}, 0
    or more, whose error names the option.
    """

    def coerce(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not 0 <= value < float("inf"):
            raise usage.UsageError(f"--{name} {text}: give a number of 0 or more")
        return value

    return coerce


#: getopt's words for a mistake, and ours.
_GETOPT_ERRORS = [
    (re.compile(r"option (-+\S+) not recognized"), r"unknown option \1"),
    (re.compile(r"option (-+\S+) requires argument"), r"\1 needs a value"),
    (re.compile(r"option (-+\S+) must not have an argument"), r"\1 takes no value"),
]


def plainError(message: str) -> str:
    """
    An option parser's error C{message} in the words of our other errors.
    """
    for pattern, words in _GETOPT_ERRORS:
        if pattern.fullmatch(message):
            return pattern.sub(words, message)
    return message


def inexactOption(args: Sequence[str], shortOpt: str, longOpt: Sequence[str]) -> str | None:
    """
    The first long option in C{args} that is not a whole name of C{longOpt}
    (getopt takes any unambiguous start of one for it: C{--disk-thread 2}
    for C{--disk-threads 2}), or L{None}. C{args} are read as getopt reads
    them: options up to C{--} or the first other argument, each followed by
    its value if it takes one; what getopt itself refuses is left to it.
    """
    takesValue = {name.rstrip("="): name.endswith("=") for name in longOpt}
    rest = list(args)
    while rest and rest[0].startswith("-") and rest[0] not in ("-", "--"):
        arg = rest.pop(0)
        if arg.startswith("--"):
            name, equals, _ = arg[2:].partition("=")
            if name not in takesValue:
                return f"--{name}"
            if takesValue[name] and not equals and rest:
                rest.pop(0)
            continue
        for at, letter in enumerate(arg[1:], 2):
            found = shortOpt.find(letter)
            if letter == ":" or found < 0:
                return None
            if shortOpt[found + 1 : found + 2] == ":":
                if at == len(arg) and rest:
                    rest.pop(0)
                break
    return None


def wrap(text: str, width: int) -> list[str]:
    """
    C{text} in lines of at most C{width}, broken between words only (a word
    longer than a line gets a line of its own).
    """
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


class Options(usage.Options):
    """
    L{usage.Options} that takes long options by their whole names only,
    whose C{--help} leaves out the L{hidden} options and wraps between
    words, and whose C{longdesc} is plain text (Twisted falls back on the
    C{__main__} module's docstring, epytext markup and all).

    @cvar hidden: long names of options that work but are not listed.
    """

    hidden: frozenset[str] = frozenset()
    longdesc = ""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options} (default: C{sys.argv[1:]}); the start of an
        option's name is an unknown option, not that option.
        """
        args = sys.argv[1:] if options is None else options
        # (Twisted's shell completion reads an option of its own first.)
        if not (len(args) > 1 and args[-2] == "--_shell-completion"):
            inexact = inexactOption(args, self.shortOpt, self.longOpt)
            if inexact is not None:
                raise usage.UsageError(f"unknown option {inexact}")
        super().parseOptions(options)

    def getUsage(self, width: int | None = None) -> str:
        width = width or int(os.environ.get("COLUMNS", "80"))
        shortOf = {long: short for short, long in self.synonyms.items() if len(short) == 1}
        parameters: list[Any] = getattr(self, "optParameters", [])
        coerceDocs = {
            p[0]: getattr(p[4], "coerceDoc", "") for p in parameters if len(p) > 4
        }
        rows = []
        for spelled in self.longOpt:
            name = spelled.rstrip("=")
            if name in self.hidden:
                continue
            doc = " ".join((self.docs.get(name) or "").split())
            coerceDoc = coerceDocs.get(name)
            if coerceDoc:
                doc = f"{doc} {coerceDoc}"
            default = self.defaults.get(name)
            if spelled.endswith("=") and default not in (None, ""):
                doc = f"{doc} [default: {default}]"
            rows.append((shortOf.get(name), spelled, doc))
        rows.sort(key=lambda row: row[0] or row[1])
        nameWidth = max(len(spelled) for _, spelled, _ in rows)
        indent = nameWidth + len("  -s, --  ")
        lines = ["Options:"]
        for short, spelled, doc in rows:
            head = f"  {'-' + short + ',' if short else '   '} --{spelled:<{nameWidth}}  "
            wrapped = wrap(doc, max(width - indent, 30)) or [""]
            lines.append(head + wrapped[0])
            lines += [" " * indent + line for line in wrapped[1:]]
        if self.longdesc:
            lines += ["", *wrap(self.longdesc, width)]
        return "\n".join([*lines, ""])


#: A duration: a number of seconds (decimals allowed), maybe followed by
#: s, m, h or d.
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)([smhd]?)", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parseDuration(text: str) -> float:
    """
    A duration such as C{90}, C{90s}, C{1.5}, C{30m}, C{24h} or C{7d}, in
    seconds.

    @raise ValueError: for anything else (negative numbers included).
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def formatDuration(seconds: float) -> str:
    """
    C{seconds} in the largest unit of L{parseDuration} that writes it as a
    whole number (else in seconds).
    """
    for unit in ("d", "h", "m"):
        if seconds and seconds % _SECONDS[unit] == 0:
            return f"{int(seconds // _SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


def durationOption(name: str) -> Callable[[str], float]:
    """
    The coerce function of a duration option C{--name}, whose error names
    it.
    """

    def coerce(text: str) -> float:
        try:
            return parseDuration(text)
        except ValueError:
            raise usage.UsageError(
                f"--{name} {text}: not a duration; give seconds, or a number with "
                "s, m, h or d, e.g. 90s, 30m, 24h"
            ) from None

    coerce.coerceDoc = "Seconds, or a number with s, m, h or d, e.g. 90s, 30m, 24h."  # type: ignore[attr-defined]
    return coerce
