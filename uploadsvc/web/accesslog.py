"""
Access log lines that carry no secret: the Site's C{logFormatter}.

Twisted's combined log format writes the request URI as it was sent, so a
signed URL's C{sig}, a C{token} or C{access_token} in the query, or
credentials in an absolute URI would reach every log file and log shipper.
L{redactedLogFormatter} writes the same line with every query value but
C{expires} replaced by C{REDACTED} (what is not known to be harmless is
hidden: fail closed), and the same for the Referer. Header values such as
C{Authorization} and cookies are not in the combined format at all.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

#: What replaces a hidden value.
REDACTED = b"REDACTED"

#: Query parameters whose values are logged as sent (not secrets).
KEPT = frozenset({b"expires"})

#: The userinfo of an absolute URI (C{scheme://user:password@host}).
_USERINFO = re.compile(rb"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def redactQuery(query: bytes) -> bytes:
    """
    C{query} (the part after C{?}) with the value of every parameter but
    those in L{KEPT} replaced by L{REDACTED}; a parameter without C{=} is
    replaced whole, as it may be a bare token.
    """
    parts: list[bytes] = []
    for part in query.split(b"&"):
        name, equals, _ = part.partition(b"=")
        if not part:
            parts.append(part)
        elif not equals:
            parts.append(REDACTED)
        elif name.lower() in KEPT:
            parts.append(part)
        else:
            parts.append(name + b"=" + REDACTED)
    return b"&".join(parts)


def redactURI(uri: bytes) -> bytes:
    """
    C{uri} (a request target or a full URL) without its secrets: the query
    as L{redactQuery} leaves it, no fragment, and no userinfo.
    """
    uri = _USERINFO.sub(rb"\1" + REDACTED + b"@", uri)
    uri = uri.partition(b"#")[0]
    path, question, query = uri.partition(b"?")
    return path + question + redactQuery(query) if question else path


class _RedactedRequest:
    """
    A request as L{combinedLogFormatter} sees it: its URI and Referer
    redacted, everything else read through.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redactURI(request.uri or b"")

    def getHeader(self, name: bytes) -> bytes | None:
        value: bytes | None = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redactURI(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


@provider(IAccessLogFormatter)
def redactedLogFormatter(timestamp: str, request: Any) -> str:
    """
    The combined log format line for C{request}, without secrets.
    """
    return combinedLogFormatter(timestamp, _RedactedRequest(request))  # type: ignore[no-any-return]
