"""
Public URLs behind a trusted proxy, on twisted.web requests: the glue of
L{uploadsvc.protocol.forwarded}.

L{notePublicBase} runs once per request in the root resource (after CORS,
before any handler); L{absoluteURL} is what every handler that hands out a
URL (C{Location}, tus and IETF upload URLs) calls, with the path-absolute URL
it would hand out without a proxy (mount prefix included), e.g.
C{absoluteURL(request, config.prefix + b"/.tus/" + uploadId)}.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import UNIXAddress
from zope.interface import Interface

from uploadsvc.errors import BadRequest
from uploadsvc.protocol import forwarded
from uploadsvc.protocol.forwarded import ForwardedError, PublicBase, TrustedProxies


class IPublicURLs(Interface):
    """
    What a request's URLs are built from (a L{_Public}), kept on the request.
    """


@attrs.frozen
class _Public:
    base: PublicBase
    ownScheme: str
    ownHost: str
    mountPrefix: bytes


def _peer(request: Any) -> str | None:
    """
    The request's peer: its IP address as text, L{None} on a unix socket.
    """
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        return None
    return getattr(address, "host", "")  # type: ignore[no-any-return]


def notePublicBase(request: Any, proxies: TrustedProxies, mountPrefix: bytes) -> None:
    """
    Read what a trusted proxy says about C{request}'s public URL and keep it
    on the request for L{absoluteURL}; from another peer, keep nothing.

    @raise BadRequest: a trusted proxy sent a value that does not parse.
    """
    if not proxies.enabled or not proxies.trusts(_peer(request)):
        return
    headers = request.requestHeaders
    try:
        base = forwarded.publicBase(
            headers.getRawHeaders(b"Forwarded", []),
            headers.getRawHeaders(b"X-Forwarded-Proto", []),
            headers.getRawHeaders(b"X-Forwarded-Host", []),
            headers.getRawHeaders(b"X-Forwarded-Prefix", []),
        )
        ownHost = ""
        if base.scheme is not None and base.host is None:
            # The proxy passes the client's Host on: the URL's host then.
            try:
                ownHost = forwarded.parseHost((request.getHeader(b"Host") or b"").decode("latin-1"))
            except ForwardedError as e:
                raise ForwardedError(f"Host: {e}") from None
    except ForwardedError as e:
        raise BadRequest("bad-forwarded", f"from the trusted proxy: {e}") from None
    if base.empty:
        return
    own = "https" if request.isSecure() else "http"
    request.setComponent(IPublicURLs, _Public(base, own, ownHost, mountPrefix))


def publicBase(request: Any) -> PublicBase:
    """
    What the trusted proxy said about C{request}'s public scheme, host and
    prefix (each L{None} where it said nothing, all of them for a request
    from anyone else).
    """
    public = request.getComponent(IPublicURLs) if hasattr(request, "getComponent") else None
    return public.base if public is not None else PublicBase()


def absoluteURL(request: Any, location: bytes) -> bytes:
    """
    The URL to hand out for C{location}, a path-absolute URL of this server
    (its mount prefix included, as L{UploadPath.location} gives it): as the
    trusted proxy's client must see it, or C{location} itself when no
    trusted proxy said anything.
    """
    public = request.getComponent(IPublicURLs) if hasattr(request, "getComponent") else None
    if public is None:
        return location
    return forwarded.absoluteURL(
        public.base, public.ownScheme, public.ownHost, public.mountPrefix, location
    )
