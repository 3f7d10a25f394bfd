"""
CORS decisions (docs/protocol.md section 10): which browser origins may use
the server, what a preflight is answered, and what every answer to an
allowed origin carries. Pure: byte strings in, headers or a refusal out.

Off unless origins are configured. A preflight (C{OPTIONS} with C{Origin}
and C{Access-Control-Request-Method}) is answered before credentials are
checked, since browsers never send them on one; it answers nothing but
these headers, so it lets nobody do anything. An C{OPTIONS} without
C{Access-Control-Request-Method} is no preflight and goes through the
ordinary checks.
"""

from __future__ import annotations

import re

import attrs

#: The methods a browser may use: the path protocol, tus, the IETF draft,
#: and downloads.
ALLOWED_METHODS = (b"PUT", b"POST", b"HEAD", b"PATCH", b"DELETE", b"OPTIONS", b"GET")

#: Every request header of docs/protocol.md sections 2-9 that is not one a
#: browser may send anyway (a CORS-safelisted one): C{*} does not cover
#: C{Authorization}, and means a literal star with credentials, so they are
#: listed.
ALLOWED_HEADERS = (
    b"Authorization",
    b"Content-Type",
    b"Content-Range",
    b"Content-Disposition",
    b"Content-Digest",
    b"Repr-Digest",
    b"Want-Repr-Digest",
    b"Want-Content-Digest",
    b"Tus-Resumable",
    b"Upload-Offset",
    b"Upload-Length",
    b"Upload-Metadata",
    b"Upload-Defer-Length",
    b"Upload-Concat",
    b"Upload-Checksum",
    b"Upload-Complete",
    b"Upload-Draft-Interop-Version",
    b"X-HTTP-Method-Override",
    b"X-Requested-With",
    b"Range",
    b"If-Match",
    b"If-None-Match",
    b"If-Modified-Since",
    b"If-Unmodified-Since",
    b"If-Range",
)

#: The answer headers a client reads, beyond the few that every browser
#: shows a script anyway.
EXPOSED_HEADERS = (
    b"Location",
    b"Upload-Offset",
    b"Upload-Length",
    b"Upload-Complete",
    b"Upload-Limit",
    b"Upload-Expires",
    b"Upload-Metadata",
    b"Upload-Defer-Length",
    b"Upload-Concat",
    b"Upload-Draft-Interop-Version",
    b"Tus-Resumable",
    b"Tus-Version",
    b"Tus-Extension",
    b"Tus-Max-Size",
    b"Tus-Checksum-Algorithm",
    b"Repr-Digest",
    b"Content-Digest",
    b"Range",
    b"Content-Range",
    b"Accept-Ranges",
    b"Retry-After",
    b"WWW-Authenticate",
    b"ETag",
    b"Last-Modified",
    b"Allow",
)

#: A serialized origin (RFC 6454): a scheme, a host and maybe a port, as
#: browsers send it (lower case, no default port, no path).
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
)

_DEFAULT_PORTS = {"http": "80", "https": "443"}

#: The Chromium cap on Access-Control-Max-Age (seconds); Firefox caps at a day.
MAX_AGE_CAP = 86400


class OriginError(ValueError):
    """
    A configured origin is not one a browser would ever send.
    """


def parseOrigin(text: str) -> str:
    """
    The serialized form of a configured origin: C{https://Example.org:443}
    becomes C{https://example.org}, which is what a browser sends.

    @raise OriginError: it has a path, a query, user info, another scheme,
        or a port out of range.
    """
    lowered = text.strip().lower()
    match = _ORIGIN.fullmatch(lowered)
    if match is None:
        raise OriginError(
            f"{text!r} is not an origin: give scheme://host[:port], e.g. "
            "https://app.example.org (no path, not even a trailing /)"
        )
    scheme, host, port = match.group("scheme", "host", "port")
    if ".." in host or host.startswith(".") or host.endswith("."):
        raise OriginError(f"{text!r} is not an origin: bad host name")
    if port is not None and int(port) > 65535:
        raise OriginError(f"{text!r} is not an origin: port out of range")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@attrs.frozen
class CorsPolicy:
    """
    Which origins may use the server from a browser.

    @ivar origins: serialized origins (see L{parseOrigin}), or C{{"*"}} for
        any origin; empty: CORS off.
    @ivar credentials: let browsers send credentials (cookies, HTTP
        authentication, client certificates) and read the answers; not with
        C{*}, which browsers refuse to combine with credentials.
    @ivar maxAge: seconds a browser may cache a preflight's answer.
    """

    origins: frozenset[str] = frozenset()
    credentials: bool = False
    maxAge: int = 600

    def __attrs_post_init__(self) -> None:
        if "*" in self.origins and self.credentials:
            raise OriginError("the origin * cannot be combined with credentials")
        if "*" in self.origins and len(self.origins) > 1:
            raise OriginError("the origin * already covers every other origin")
        if not 0 <= self.maxAge <= MAX_AGE_CAP:
            raise OriginError(f"max age must be from 0 to {MAX_AGE_CAP} seconds")

    @property
    def enabled(self) -> bool:
        return bool(self.origins)

    @property
    def anyOrigin(self) -> bool:
        return "*" in self.origins

    def allows(self, origin: bytes) -> bool:
        """
        Whether C{origin}, a request's C{Origin} header, is configured:
        compared exactly, as browsers serialize it (C{null} never is).
        """
        if not self.enabled or origin == b"null":
            return False
        if self.anyOrigin:
            return True
        try:
            return origin.decode("ascii") in self.origins
        except UnicodeDecodeError:
            return False


@attrs.frozen
class Preflight:
    """
    Answer this preflight now: C{status}, these headers, and C{reason} as a
    one-line body.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    reason: str


@attrs.frozen
class Decorate:
    """
    Go on with the request; its answer, whatever it is, carries these
    headers.
    """

    headers: tuple[tuple[bytes, bytes], ...]


def isPreflight(method: bytes, origin: bytes | None, requestMethod: bytes | None) -> bool:
    """
    Whether a request is a CORS preflight: C{OPTIONS} with both C{Origin}
    and C{Access-Control-Request-Method}.
    """
    return method == b"OPTIONS" and origin is not None and requestMethod is not None


def _vary(policy: CorsPolicy) -> tuple[tuple[bytes, bytes], ...]:
    """
    C{Vary: Origin} whenever an answer depends on the origin (every answer
    of a server with a list of origins), so no cache hands one origin's
    answer to another.
    """
    return () if policy.anyOrigin else ((b"Vary", b"Origin"),)


def _allowOrigin(policy: CorsPolicy, origin: bytes) -> tuple[tuple[bytes, bytes], ...]:
    headers = [(b"Access-Control-Allow-Origin", b"*" if policy.anyOrigin else origin)]
    if policy.credentials:
        headers.append((b"Access-Control-Allow-Credentials", b"true"))
    return tuple(headers)


def decide(
    policy: CorsPolicy,
    method: bytes,
    origin: bytes | None,
    requestMethod: bytes | None,
) -> Preflight | Decorate:
    """
    What CORS makes of a request.

    @param origin: its C{Origin} header (L{None} when absent).
    @param requestMethod: its C{Access-Control-Request-Method} header.
    @return: a L{Preflight} to answer now (C{200} with the allowed methods
        and headers to a configured origin; C{403} without any CORS header
        to another, which a browser reads as a refusal), or the headers that
        the request's own answer carries (none when CORS is off or the
        origin is not configured, except C{Vary}).
    """
    if not policy.enabled:
        return Decorate(())
    if isPreflight(method, origin, requestMethod):
        assert origin is not None
        if not policy.allows(origin):
            return Preflight(
                403, _vary(policy),
                f"CORS: the origin {origin.decode('latin-1')[:200]} is not allowed here",
            )
        return Preflight(
            200,
            _allowOrigin(policy, origin)
            + (
                (b"Access-Control-Allow-Methods", b", ".join(ALLOWED_METHODS)),
                (b"Access-Control-Allow-Headers", b", ".join(ALLOWED_HEADERS)),
                (b"Access-Control-Max-Age", b"%d" % policy.maxAge),
            )
            + _vary(policy),
            "",
        )
    if origin is None or not policy.allows(origin):
        return Decorate(_vary(policy))
    return Decorate(
        _allowOrigin(policy, origin)
        + ((b"Access-Control-Expose-Headers", b", ".join(EXPOSED_HEADERS)),)
        + _vary(policy)
    )
