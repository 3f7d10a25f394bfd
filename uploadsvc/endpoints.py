"""
C{--listen} endpoint strings, parsed once into a frozen value.

Twisted turns an endpoint string into an endpoint object whose settings
(port, interface, backlog, TLS context) are private attributes. The
supervisor of C{--workers} must bind the sockets itself, and the check for
an exposed listener must read the interface, so both use L{ListenEndpoint}
instead: the same grammar as L{twisted.internet.endpoints.serverFromString}
(C{:} separates arguments, the first C{=} of an argument makes it a keyword,
C{\\} escapes the next character), read by our own small parser, for the
types C{tcp}, C{tcp6}, C{ssl} and C{unix}. Other types (plugins such as
C{systemd:}) are kept by name only.

Parsing reads no file: the TLS key and certificates are loaded, with
Twisted's public TLS API, only when L{TLSFiles.contextFactory} is called.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

import attrs
from twisted.internet.abstract import isIPv6Address

#: Twisted's backlog when an endpoint string gives none.
TWISTED_BACKLOG = 50


class EndpointError(ValueError):
    """
    An endpoint string that cannot be listened on; the message says why in
    one line.
    """


@attrs.frozen
class TLSFiles:
    """
    The TLS settings of an C{ssl:} endpoint, as C{serverFromString} reads
    them.

    @ivar privateKey: the PEM file of the private key.
    @ivar certKey: the PEM file of the certificate (L{None}: in
        C{privateKey}).
    @ivar sslmethod: the name of an C{OpenSSL.SSL} method constant, or
        L{None} for Twisted's default.
    @ivar extraCertChain: a PEM file of the chain's other certificates.
    @ivar dhParameters: a file of Diffie-Hellman parameters.
    """

    privateKey: str = "server.pem"
    certKey: str | None = None
    sslmethod: str | None = None
    extraCertChain: str | None = None
    dhParameters: str | None = None

    def contextFactory(self) -> Any:
        """
        The server's TLS context factory, as C{serverFromString} builds it
        for the same settings, made with public APIs only.

        @raise OSError: when a file cannot be read.
        @raise ValueError: when a file holds no usable key or certificate.
        """
        from OpenSSL import SSL
        from twisted.internet import ssl
        from twisted.python.filepath import FilePath

        certPEM = FilePath(self.certKey or self.privateKey).getContent()
        keyPEM = FilePath(self.privateKey).getContent()
        identity = ssl.PrivateCertificate.loadPEM(certPEM + b"\n" + keyPEM)
        options: dict[str, Any] = {}
        if self.sslmethod is not None:
            options["method"] = getattr(SSL, self.sslmethod)
        if self.extraCertChain is not None:
            chain = _pemCertificates(FilePath(self.extraCertChain).getContent())
            if not chain:
                raise ValueError(
                    f"extraCertChain {self.extraCertChain}: no certificate in PEM format"
                )
            options["extraCertChain"] = [ssl.Certificate.loadPEM(pem).original for pem in chain]
        if self.dhParameters is not None:
            options["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
                FilePath(self.dhParameters)
            )
        return ssl.CertificateOptions(
            privateKey=identity.privateKey.original,
            certificate=identity.original,
            **options,
        )


def _pemCertificates(data: bytes) -> list[bytes]:
    """
    Each C{CERTIFICATE} block of a PEM file, in order (found as Twisted's
    C{ssl:} parser finds them).
    """
    return _PEM_CERTIFICATE.findall(data)


_PEM_CERTIFICATE = re.compile(
    rb"(-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----)", re.DOTALL
)


#: The kinds of endpoint L{ListenEndpoint} reads, with their arguments in
#: their positional order (as in Twisted's parsers); the first is required.
_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": (
        "port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
        "extraCertChain", "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


@attrs.frozen
class ListenEndpoint:
    """
    One C{--listen} endpoint string, parsed (see L{parseEndpoint}).

    @ivar description: the string it was parsed from.
    @ivar kind: C{tcp}, C{tcp6}, C{ssl}, C{unix}, or the name of another
        type of endpoint, whose arguments are not read here.
    @ivar port: the TCP port (C{tcp}, C{tcp6}, C{ssl}).
    @ivar interface: the address to listen on; C{""} (or C{"::"} for
        C{tcp6}) is every interface.
    @ivar backlog: the listen queue's length, or L{None} when not given
        (Twisted then uses L{TWISTED_BACKLOG}).
    @ivar path: the socket file (C{unix}).
    @ivar mode: the socket file's permissions (C{unix}).
    @ivar lockfile: whether Twisted would guard the socket file with a
        lock file (C{unix}).
    @ivar tls: the TLS settings (C{ssl}).
    """

    description: str
    kind: str
    port: int | None = None
    interface: str = ""
    backlog: int | None = None
    path: str | None = None
    mode: int = 0o666
    lockfile: bool = True
    tls: TLSFiles | None = None

    @property
    def family(self) -> socket.AddressFamily | None:
        """
        The address family of the listening socket, chosen as Twisted's
        C{listenTCP} does (by the interface, whatever the type's name), or
        L{None} for a type not read here.
        """
        if self.kind == "unix":
            return socket.AF_UNIX
        if self.port is None:
            return None
        return socket.AF_INET6 if isIPv6Address(self.interface) else socket.AF_INET

    @property
    def isLoopback(self) -> bool:
        """
        Whether only this host can connect: a UNIX socket, or TCP on a
        loopback interface (127.0.0.0/8, C{::1}, C{localhost}). No
        interface means every interface; a type not read here counts as
        reachable from the network.
        """
        if self.kind == "unix":
            return True
        if self.port is None:
            return False
        if self.interface.lower() == "localhost":
            return True
        try:
            address = ipaddress.ip_address(self.interface.strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback

    def withDefaultBacklog(self, backlog: int) -> ListenEndpoint:
        """
        This endpoint with C{backlog} unless it gives one (or has none, as
        a type not read here).
        """
        if self.backlog is not None or self.family is None:
            return self
        return attrs.evolve(self, backlog=backlog)


def splitDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword arguments of an endpoint string, by the
    rules of Twisted's own parser: C{:} ends an argument; the first C{=} in
    an argument splits it into a keyword and its value (later ones belong
    to the value); C{\\} makes the next character plain.

    @raise EndpointError: when the string ends with a lone C{\\}.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for char in chars:
        if char == ":":
            pieces.append("".join(current))
            _add(pieces, args, kwargs)
            pieces, current = [], []
        elif char == "=" and not pieces:
            pieces.append("".join(current))
            current = []
        elif char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise EndpointError("ends with a lone backslash")
            current.append(escaped)
        else:
            current.append(char)
    pieces.append("".join(current))
    _add(pieces, args, kwargs)
    return args, kwargs


def _add(pieces: list[str], args: list[str], kwargs: dict[str, str]) -> None:
    if len(pieces) == 1:
        args.append(pieces[0])
    else:
        kwargs[pieces[0]] = pieces[1]


def _number(name: str, text: str, base: int = 10) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise EndpointError(f"{name} {text!r} is not a number") from None


def parseEndpoint(description: str) -> ListenEndpoint:
    """
    Parse a listening endpoint string into a L{ListenEndpoint}.

    C{tcp}, C{tcp6}, C{ssl} and C{unix} endpoints are read with the
    arguments, defaults and conversions of C{serverFromString}, and refused
    where it refuses them; a port must also be one (0 to 65535). The files
    of an C{ssl} endpoint are not read here.

    @raise EndpointError: saying what is wrong.
    """
    args, kwargs = splitDescription(description)
    if not args or not args[0]:
        raise EndpointError("no endpoint type (e.g. tcp:8080)")
    name = args[0]
    # Twisted's own types are spelled in lower case; tcp6, a plugin, in any.
    kind = "tcp6" if name.lower() == "tcp6" else name
    if kind not in _ARGUMENTS:
        return ListenEndpoint(description, name)
    names = _ARGUMENTS[kind]
    given = args[1:]
    if len(given) > len(names):
        raise EndpointError(f"too many arguments for {kind} (at most {len(names)})")
    values = dict(zip(names, given))
    for key, value in kwargs.items():
        if key not in names:
            raise EndpointError(f"{kind} has no option {key!r} (it has {', '.join(names)})")
        if key in values:
            raise EndpointError(f"{key} given twice")
        values[key] = value
    if names[0] not in values:
        raise EndpointError(f"{kind} needs a {names[0]}")
    backlog = _number("backlog", values["backlog"]) if "backlog" in values else None
    if kind == "unix":
        return ListenEndpoint(
            description,
            kind,
            path=values["address"],
            backlog=backlog,
            mode=_number("mode", values.get("mode", "666"), 8),
            lockfile=bool(_number("lockfile", values.get("lockfile", "1"))),
        )
    port = _number("port", values["port"])
    if not 0 <= port <= 65535:
        raise EndpointError(f"port {port} is not between 0 and 65535")
    tls = None
    if kind == "ssl":
        tls = TLSFiles(
            privateKey=values.get("privateKey", "server.pem"),
            certKey=values.get("certKey"),
            sslmethod=values.get("sslmethod"),
            extraCertChain=values.get("extraCertChain"),
            dhParameters=values.get("dhParameters"),
        )
        _checkMethod(tls.sslmethod)
    return ListenEndpoint(
        description,
        kind,
        port=port,
        interface=values.get("interface", "::" if kind == "tcp6" else ""),
        backlog=backlog,
        tls=tls,
    )


def _checkMethod(name: str | None) -> None:
    """
    Refuse an C{sslmethod} that is not an C{OpenSSL.SSL} method constant
    (Twisted fails on it with an C{AttributeError} instead).
    """
    if name is None:
        return
    from OpenSSL import SSL

    if not (name.endswith("_METHOD") and isinstance(getattr(SSL, name, None), int)):
        raise EndpointError(f"sslmethod {name!r} is not a method of OpenSSL.SSL, e.g. TLS_METHOD")
