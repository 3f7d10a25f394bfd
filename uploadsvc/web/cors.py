"""
CORS on twisted.web requests: the glue of L{uploadsvc.protocol.cors}.

L{applyCors} runs first for every request (in L{uploadsvc.web.app}'s root
resource): it answers a preflight before credentials are checked, and puts
the CORS headers of an allowed origin on the request before any handler
runs, so that every answer, refusals included, carries them.
"""

from __future__ import annotations

from typing import Any

from uploadsvc.errors import Forbidden
from uploadsvc.protocol.cors import CorsPolicy, Preflight, decide
from uploadsvc.web.answers import refuse


def _one(request: Any, name: bytes) -> bytes | None:
    """
    The value of a header the request may send once; two count as an
    origin no list holds (the empty value).
    """
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else b""


def applyCors(request: Any, policy: CorsPolicy) -> bytes | None:
    """
    Answer C{request} if it is a preflight (return the body), or add the
    CORS headers its answer carries and return L{None} to go on.
    """
    decision = decide(
        policy,
        request.method,
        _one(request, b"Origin"),
        _one(request, b"Access-Control-Request-Method"),
    )
    for name, value in decision.headers:
        request.responseHeaders.addRawHeader(name, value)
    if not isinstance(decision, Preflight):
        return None
    if decision.status != 200:
        return refuse(request, Forbidden("cors-origin", decision.reason))
    request.setResponseCode(200)
    request.setHeader(b"Content-Length", b"0")
    return b""
