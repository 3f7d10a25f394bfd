"""
The public address of the server behind a trusted proxy (docs/protocol.md
section 10): which scheme, host and path prefix the URLs it hands out use.

A proxy that terminates TLS tells the scheme with C{Forwarded} (RFC 7239)
or C{X-Forwarded-Proto}, the host the client asked for with C{Forwarded}'s
C{host} or C{X-Forwarded-Host}, and the path it mounts the server under
with C{X-Forwarded-Prefix}. Those headers count only from a peer configured
as trusted (L{TrustedProxies}); from anyone else they are ignored, since a
client could otherwise point C{Location} anywhere. The values are parsed
strictly: one that is not a scheme, a host or a path prefix is refused
(L{ForwardedError}), never repaired.

Pure: headers and addresses in, a L{PublicBase} out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Sequence

import attrs

#: RFC 7230 token characters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: RFC 7230 quoted-string (visible ASCII, space and tab, and quoted pairs).
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")

#: A host as a URL authority names it: a DNS name (letters, digits, hyphen,
#: underscore, dot), an IPv4 address, or an IPv6 literal in brackets, and an
#: optional port.
_HOST = re.compile(
    r"(?P<name>[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?"
    r"|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)

#: A path prefix: segments of RFC 3986 pchars (percent escapes included),
#: without a comma (a list of prefixes is not one prefix).
_PREFIX = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+;=:@]|%[0-9A-Fa-f]{2})*)+")

SCHEMES = ("http", "https")

#: Longest value read from any one of these headers.
MAX_HEADER = 4096


class ForwardedError(ValueError):
    """
    A trusted proxy sent a value that is not what its header holds.
    """


@attrs.frozen
class PublicBase:
    """
    What a trusted proxy said about the request's public URL; L{None} where
    it said nothing (the request's own value applies).

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: C{host[:port]}, host in lower case.
    @ivar prefix: the path under which the proxy serves the server's mount
        point: C{""} or C{"/a/b"} (no trailing slash).
    """

    scheme: str | None = None
    host: str | None = None
    prefix: str | None = None

    @property
    def empty(self) -> bool:
        return self.scheme is None and self.host is None and self.prefix is None


def parseForwarded(values: Sequence[bytes]) -> list[dict[str, str]]:
    """
    The elements of the C{Forwarded} header lines C{values} (RFC 7239
    section 4), in order, each a dict of lower-cased parameter names to
    their values (quotes and quoted pairs undone).

    @raise ForwardedError: a malformed element, or a parameter twice in one.
    """
    joined = ",".join(v.decode("latin-1") for v in values)
    if len(joined) > MAX_HEADER:
        raise ForwardedError("the Forwarded header is too long")
    elements: list[dict[str, str]] = []
    pos = 0
    while True:
        element: dict[str, str] = {}
        while True:
            match = _PAIR.match(joined, pos)
            if match is None:
                raise ForwardedError("the Forwarded header is malformed")
            name, value = match.group(1).lower(), match.group(2)
            if name in element:
                raise ForwardedError(f"the Forwarded header names {name} twice in one element")
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            element[name] = value
            pos = match.end()
            if pos < len(joined) and joined[pos] == ";":
                pos += 1
                continue
            break
        elements.append(element)
        if pos == len(joined):
            return elements
        if joined[pos] != ",":
            raise ForwardedError("the Forwarded header is malformed")
        pos += 1


def parseScheme(text: str) -> str:
    """
    C{http} or C{https}, in lower case.

    @raise ForwardedError: anything else.
    """
    scheme = text.strip(" \t").lower()
    if scheme not in SCHEMES:
        raise ForwardedError(f"{text[:100]!r} is not http or https")
    return scheme


def parseHost(text: str) -> str:
    """
    A host and optional port for a URL authority, host in lower case.

    @raise ForwardedError: not a DNS name, an IPv4 address or a bracketed
        IPv6 address, or a port that is not 1-65535.
    """
    match = _HOST.fullmatch(text.strip(" \t"))
    if match is None:
        raise ForwardedError(f"{text[:100]!r} is not a host name")
    name, port = match.group("name"), match.group("port")
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise ForwardedError(f"{text[:100]!r} is not a host name") from None
    elif ".." in name:
        raise ForwardedError(f"{text[:100]!r} is not a host name")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ForwardedError(f"{text[:100]!r} has a port out of range")
    return match.group(0).lower()


def parsePrefix(text: str) -> str:
    """
    A path prefix: C{""} for C{/}, else C{/a/b} without a trailing slash.

    @raise ForwardedError: not path-absolute, a C{.} or C{..} segment, an
        empty segment, or a character that a path does not hold as is.
    """
    prefix = text.strip(" \t")
    if prefix == "/":
        return ""
    prefix = prefix[:-1] if prefix.endswith("/") else prefix
    if not _PREFIX.fullmatch(prefix):
        raise ForwardedError(f"{text[:100]!r} is not a path prefix")
    segments = prefix.split("/")[1:]
    if any(s in ("", ".", "..") or s.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for s in segments):
        raise ForwardedError(f"{text[:100]!r} is not a path prefix")
    return prefix


def _last(values: Sequence[bytes], name: str) -> str | None:
    """
    The last comma-separated entry of the header lines C{values}: the one
    that the nearest proxy (the trusted one) added.
    """
    if not values:
        return None
    joined = ",".join(v.decode("latin-1") for v in values)
    if len(joined) > MAX_HEADER:
        raise ForwardedError(f"the {name} header is too long")
    return joined.rsplit(",", 1)[-1]


def publicBase(
    forwarded: Sequence[bytes],
    proto: Sequence[bytes],
    host: Sequence[bytes],
    prefix: Sequence[bytes],
) -> PublicBase:
    """
    What the headers of a trusted proxy's request say about its public URL.

    C{Forwarded} wins over the C{X-Forwarded-*} headers for what it says:
    only its last element counts (the one the trusted proxy added; earlier
    ones came from further away). C{X-Forwarded-Prefix} is one prefix, not
    a list.

    @param forwarded: the C{Forwarded} header lines.
    @param proto: the C{X-Forwarded-Proto} lines.
    @param host: the C{X-Forwarded-Host} lines.
    @param prefix: the C{X-Forwarded-Prefix} lines.
    @raise ForwardedError: a value that does not parse (the reason names
        the header).
    """
    scheme = hostValue = prefixValue = None
    try:
        if forwarded:
            last = parseForwarded(forwarded)[-1]
            if "proto" in last:
                scheme = parseScheme(last["proto"])
            if "host" in last:
                hostValue = parseHost(last["host"])
    except ForwardedError as e:
        raise ForwardedError(f"Forwarded: {e}") from None
    try:
        text = _last(proto, "X-Forwarded-Proto")
        if scheme is None and text is not None:
            scheme = parseScheme(text)
    except ForwardedError as e:
        raise ForwardedError(f"X-Forwarded-Proto: {e}") from None
    try:
        text = _last(host, "X-Forwarded-Host")
        if hostValue is None and text is not None:
            hostValue = parseHost(text)
    except ForwardedError as e:
        raise ForwardedError(f"X-Forwarded-Host: {e}") from None
    if prefix:
        joined = ",".join(v.decode("latin-1") for v in prefix)
        try:
            if len(joined) > MAX_HEADER:
                raise ForwardedError("too long")
            prefixValue = parsePrefix(joined)
        except ForwardedError as e:
            raise ForwardedError(f"X-Forwarded-Prefix: {e}") from None
    return PublicBase(scheme, hostValue, prefixValue)


def absoluteURL(
    base: PublicBase, ownScheme: str, ownHost: str, mountPrefix: bytes, location: bytes
) -> bytes:
    """
    The URL to hand out for C{location}, a path-absolute URL of this
    server (mount prefix included).

    Without anything from a trusted proxy it stays path-absolute (a client
    resolves it against the URL it asked for, so it stays right behind any
    proxy that keeps the path). With a scheme or host from the proxy it is
    absolute, the rest taken from the request itself (C{ownScheme},
    C{ownHost}); with a prefix, that prefix replaces the mount prefix.

    @param ownHost: the request's C{Host}, already checked with
        L{parseHost} (only used when the proxy names a scheme but no host).
    """
    path = location
    if base.prefix is not None:
        if mountPrefix and (path == mountPrefix or path.startswith(mountPrefix + b"/")):
            path = path[len(mountPrefix):]
        path = base.prefix.encode("ascii") + path
    if base.scheme is None and base.host is None:
        return path
    scheme = base.scheme if base.scheme is not None else ownScheme
    host = base.host if base.host is not None else ownHost
    return f"{scheme}://{host}".encode("ascii") + path


@attrs.frozen
class TrustedProxies:
    """
    The peers whose forwarding headers count.

    @ivar networks: IP networks (a single address is a /32 or /128).
    @ivar unix: whether a peer on a unix socket (a front end on this host)
        is trusted.
    """

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    unix: bool = False

    @classmethod
    def fromStrings(cls, values: Iterable[str]) -> TrustedProxies:
        """
        From option values: IP addresses, CIDR networks, or C{unix}.

        @raise ValueError: a value that is none of them (the message says
            which).
        """
        networks = []
        unix = False
        for value in values:
            if value == "unix":
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(value, strict=True))
            except ValueError as e:
                raise ValueError(
                    f"{value!r} is not an IP address, a network (CIDR) or unix: {e}"
                ) from None
        return cls(tuple(networks), unix)

    @property
    def enabled(self) -> bool:
        return bool(self.networks) or self.unix

    def trusts(self, peer: str | None) -> bool:
        """
        Whether a peer is trusted.

        @param peer: its IP address as text, or L{None} for a unix socket.
        """
        if peer is None:
            return self.unix
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
