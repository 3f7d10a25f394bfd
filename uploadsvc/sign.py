"""
Mint a signed upload URL (see L{uploadsvc.protocol.signing})::

    python -m uploadsvc.sign --key-file /etc/uploadsvc/signing.key \\
        --method PUT --path /photos/a.jpg --ttl 900 --base-url https://up.example

prints C{https://up.example/photos/a.jpg?expires=...&sig=...}. The path is
signed exactly as given, so give it as the client will send it:
percent-encoded, with the mount prefix if the server has one. Applications
in Python can call L{signedURL} instead.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence
from urllib.parse import quote

from twisted.python import usage

from uploadsvc import commandline
from uploadsvc.protocol.signing import signQuery
from uploadsvc.web.auth import SecretFileError, readSecrets


def signedURL(
    key: bytes, method: str, path: str, expires: int, baseURL: str = ""
) -> str:
    """
    A URL that lets its holder send C{method} to C{path} until C{expires}
    (and C{HEAD} too, for a C{PUT}).

    @param path: the raw request path, starting with C{/}; characters
        outside the URL syntax are percent-encoded first (C{%} is kept, so
        an already encoded path is signed as it is).
    @param baseURL: scheme and authority to put in front, e.g.
        C{https://up.example}.
    """
    raw = quote(path, safe="/%!$&'()*+,;=:@~-._").encode("ascii")
    if not raw.startswith(b"/"):
        raise ValueError("the path must start with /")
    query = signQuery(key, method.encode("ascii"), raw, expires)
    return baseURL.rstrip("/") + raw.decode("ascii") + "?" + query.decode("ascii")


class SignOptions(commandline.Options):
    synopsis = (
        "Usage: python -m uploadsvc.sign --key-file FILE --path /PATH "
        "[--method PUT] [--ttl SECONDS] [--base-url URL]"
    )
    longdesc = (
        "Print a signed upload URL: it lets its holder send METHOD to PATH "
        "until it expires, with no other credential. The path is signed exactly "
        "as given, so give it as the client will send it: percent-encoded, with "
        "the mount prefix if the server has one. Example: python -m "
        "uploadsvc.sign --key-file /etc/uploadsvc/signing.key --path "
        "/photos/a.jpg --base-url https://up.example prints "
        "https://up.example/photos/a.jpg?expires=...&sig=..."
    )
    optParameters = [
        ["key-file", "k", None, "The server's --signing-key-file (its first key signs)."],
        ["method", "m", "PUT", "PUT (also allows HEAD and POST), HEAD or DELETE."],
        ["path", "p", None, "The request path, e.g. /photos/a.jpg."],
        ["ttl", "t", 900, "Seconds the URL stays valid.", commandline.countOption("ttl")],
        ["base-url", "b", "", "Scheme and host to prefix, e.g. https://up.example."],
    ]

    def postOptions(self) -> None:
        if not self["key-file"] or not self["path"]:
            raise usage.UsageError("--key-file and --path are required")
        if self["ttl"] <= 0:
            raise usage.UsageError("--ttl must be positive")
        self["method"] = self["method"].upper()
        if self["method"] not in ("PUT", "POST", "HEAD", "DELETE"):
            raise usage.UsageError("--method must be PUT, POST, HEAD or DELETE")


def main(argv: Sequence[str] | None = None, now: float | None = None) -> int:
    options = SignOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
        keys = readSecrets(options["key-file"])
        if not keys:
            raise usage.UsageError(f"{options['key-file']} holds no usable key")
        expires = int(time.time() if now is None else now) + options["ttl"]
        url = signedURL(keys[0], options["method"], options["path"], expires, options["base-url"])
    except (usage.UsageError, SecretFileError, ValueError) as e:
        print(f"python -m uploadsvc.sign: {commandline.plainError(str(e))}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
