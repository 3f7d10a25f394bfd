"""
Tests for L{uploadsvc.endpoints}: C{--listen} strings parsed once, checked
against what Twisted's C{serverFromString} makes of the same strings (on a
memory reactor: the port, interface, backlog, mode and TLS certificate it
listens with).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from OpenSSL import crypto
from twisted.internet.endpoints import TCP6ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests.test_e2e_tls import TestPKI, makePKI
from uploadsvc.endpoints import (
    TWISTED_BACKLOG,
    EndpointError,
    ListenEndpoint,
    parseEndpoint,
    splitDescription,
)
from uploadsvc.tap import Options, StartupError, makeService

_properties = settings(max_examples=300, deadline=None)

#: Files an ssl: endpoint may name; L{_files} maps them to real paths.
_KEY, _CERT, _BOTH, _CA, _MISSING = "@key", "@cert", "@both", "@ca", "@missing"


def _escape(text: str, plain: str = "") -> st.SearchStrategy[str]:
    """
    C{text} as it may be written in an endpoint string: C{:}, C{\\} and
    (in a keyword or a positional argument) C{=} escaped; other characters
    escaped or not, at random (but not those of a file placeholder, which
    L{_files} replaces).
    """
    special = ":\\" + ("" if "=" in plain else "=")
    if text.startswith("@"):
        return st.just(text)
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flags: "".join(
            "\\" + c if c in special or flag else c for c, flag in zip(text, flags)
        )
    )


_VALUES = {
    "port": ["0", "8080", "65535", "65536", "-1", " 80", "x", "", "\u0668\u0660", "1_0"],
    "interface": [
        "", "127.0.0.1", "::1", "::", "localhost", "0.0.0.0", "::ffff:127.0.0.1", "[::1]",
        "a=b", "192.168.1.5",
    ],
    "backlog": ["5", "1024", "", "x", "0"],
    "mode": ["600", "0o640", "8", "777", ""],
    "lockfile": ["0", "1", "2", "x"],
    "address": ["/tmp/u.sock", "a:b.sock", "", "rel.sock", "a=b"],
    "privateKey": [_KEY, _BOTH, _MISSING, _CERT],
    "certKey": [_CERT, _BOTH, _MISSING, _KEY],
    "sslmethod": ["NOPE"],
    "extraCertChain": [_CA, _KEY, _MISSING],
}
_KEYS = [*_VALUES, "junk", "factory", "reactor", "self", "Port", ""]
_ANY_VALUE = sorted({v for values in _VALUES.values() for v in values})


@st.composite
def _argument(draw: Any) -> str:
    key = draw(st.sampled_from(_KEYS))
    value = draw(st.sampled_from(_VALUES.get(key, _ANY_VALUE)) | st.sampled_from(_ANY_VALUE))
    if draw(st.booleans()):
        return draw(_escape(value))
    return draw(_escape(key)) + "=" + draw(_escape(value, plain="="))


#: Each kind's arguments in their positional order (as Twisted's parsers
#: take them), written out independently of L{uploadsvc.endpoints}.
_SIGNATURES = {
    "tcp": ["port", "interface", "backlog"],
    "tcp6": ["port", "backlog", "interface"],
    "ssl": ["port", "privateKey", "certKey", "sslmethod", "interface", "backlog", "extraCertChain"],
    "unix": ["address", "mode", "backlog", "lockfile"],
}
#: Values that Twisted accepts, per argument.
_GOOD = {
    "port": ["0", "8080", "65535"],
    "interface": ["", "127.0.0.1", "::1", "localhost", "0.0.0.0", "a=b"],
    "backlog": ["5", "1024"],
    "mode": ["600", "0o640", "777"],
    "lockfile": ["0", "1", "2"],
    "address": ["/tmp/u.sock", "a:b.sock", "", "a=b"],
    "privateKey": [_BOTH],
    "certKey": [_CERT, _BOTH],
    "extraCertChain": [_CA],
}


@st.composite
def _likelyValid(draw: Any) -> str:
    """
    An endpoint string that is valid more often than not: some of its
    kind's arguments in order, then others as keywords in any order.
    """
    kind = draw(st.sampled_from(["tcp", "tcp6", "TCP6", "ssl", "unix"]))
    names = [n for n in _SIGNATURES[kind.lower()] if n in _GOOD]
    positional = draw(st.integers(1, len(names)))
    rest = draw(st.permutations(names[positional:]))
    keywords = rest[: draw(st.integers(0, len(rest)))]
    if kind.lower() == "ssl" and "privateKey" not in names[:positional] + keywords:
        keywords.append("privateKey")
    value = lambda name: draw(st.sampled_from(_GOOD[name]))
    arguments = [draw(_escape(value(n))) for n in names[:positional]]
    arguments += [draw(_escape(n)) + "=" + draw(_escape(value(n), plain="=")) for n in keywords]
    if draw(st.integers(0, 4)) == 0:
        arguments.insert(draw(st.integers(0, len(arguments))), draw(_argument()))
    return ":".join([kind, *arguments])


@st.composite
def _anyArguments(draw: Any) -> str:
    kind = draw(st.sampled_from(["tcp", "tcp6", "TCP6", "ssl", "unix", "TCP", "systemd"]))
    arguments = draw(st.lists(_argument(), max_size=6))
    return ":".join([kind, *arguments])


def descriptions() -> st.SearchStrategy[str]:
    """
    Endpoint strings of the kinds L{parseEndpoint} reads (and a few it
    does not), with arguments both valid and not.
    """
    return _likelyValid() | _anyArguments()


def _files(description: str, pki: TestPKI, both: str) -> str:
    return (
        description.replace(_KEY, pki.keyPath)
        .replace(_CERT, pki.certPath)
        .replace(_BOTH, both)
        .replace(_CA, pki.caPath)
        .replace(_MISSING, "no-such-file.pem")
    )


def _certificate(contextFactory: Any) -> tuple[bytes, bytes]:
    """
    What a TLS context factory presents: its certificate and public key.
    """
    return (
        crypto.dump_certificate(crypto.FILETYPE_PEM, contextFactory.certificate),
        crypto.dump_publickey(crypto.FILETYPE_PEM, contextFactory.privateKey),
    )


def twistedListens(description: str) -> tuple[Any, ...] | None:
    """
    How Twisted listens for C{description} (on a memory reactor), or
    L{None} when it refuses it.
    """
    reactor = MemoryReactorClock()
    try:
        endpoint = serverFromString(reactor, description)
    except Exception:
        return None
    failures: list[Any] = []
    endpoint.listen(Factory()).addErrback(failures.append)
    if failures:
        return None
    if reactor.tcpServers:
        port, _, backlog, interface = reactor.tcpServers[0]
        kind = "tcp6" if isinstance(endpoint, TCP6ServerEndpoint) else "tcp"
        return (kind, port, backlog, interface)
    if reactor.sslServers:
        port, _, contextFactory, backlog, interface = reactor.sslServers[0]
        return ("ssl", port, backlog, interface, _certificate(contextFactory))
    if reactor.unixServers:
        address, _, backlog, mode, wantPID = reactor.unixServers[0]
        return ("unix", address, backlog, mode, bool(wantPID))
    raise AssertionError(f"{description!r}: listened on nothing known")


def weListen(endpoint: ListenEndpoint) -> tuple[Any, ...] | None:
    """
    The same for a parsed endpoint, or L{None} when its TLS files cannot
    be used.
    """
    backlog = TWISTED_BACKLOG if endpoint.backlog is None else endpoint.backlog
    if endpoint.kind == "unix":
        return ("unix", endpoint.path, backlog, endpoint.mode, endpoint.lockfile)
    if endpoint.tls is not None:
        try:
            contextFactory = endpoint.tls.contextFactory()
        except Exception:
            return None
        return ("ssl", endpoint.port, backlog, endpoint.interface, _certificate(contextFactory))
    return (endpoint.kind, endpoint.port, backlog, endpoint.interface)


class AgainstTwistedTests(SynchronousTestCase):
    """
    L{parseEndpoint} reads an endpoint string as C{serverFromString} does.
    """

    def setUp(self) -> None:
        self.pki = makePKI(os.path.abspath(self.mktemp()))
        self.both = self.pki.certPath + ".both"
        with open(self.both, "wb") as out:
            for path in (self.pki.certPath, self.pki.keyPath):
                with open(path, "rb") as f:
                    out.write(f.read())

    def check(self, description: str) -> None:
        description = _files(description, self.pki, self.both)
        theirs = twistedListens(description)
        try:
            endpoint = parseEndpoint(description)
        except EndpointError as e:
            if theirs is not None:
                # The one refusal of ours that Twisted leaves to bind().
                self.assertIn("is not between 0 and 65535", str(e), description)
                self.assertFalse(0 <= theirs[1] <= 65535, description)
            return
        if endpoint.family is None:
            # Not read here (a plugin's type, or a misspelt one).
            self.assertFalse(endpoint.isLoopback)
            return
        self.assertEqual(weListen(endpoint), theirs, description)

    @_properties
    @given(descriptions())
    @example("tcp:8080:interface=\\:\\:1")
    @example("tcp:80:a\\=b=c")
    @example("tcp:80:interface=a=b")
    @example("unix:/tmp/a\\:b.sock:mode=600:lockfile=0")
    @example(f"ssl:0:privateKey={_KEY}:certKey={_CERT}:backlog=7:interface=127.0.0.1")
    @example(f"ssl:0:{_BOTH}")
    @example(f"ssl:0:privateKey={_KEY}:certKey={_CERT}:extraCertChain={_CA}")
    @example(f"ssl:0:privateKey={_KEY}:certKey={_CERT}:extraCertChain={_KEY}")
    @example("tcp:80\\")
    @example("a=b")
    def test_sameAsTwisted(self, description: str) -> None:
        """An endpoint string is refused, or listened on, as serverFromString's endpoint would."""
        self.check(description)

    @_properties
    @given(st.text(alphabet="tcp6sluniTCP:=\\ 0189./[]", max_size=30))
    def test_sameAsTwistedForAnyText(self, description: str) -> None:
        """Any string made of the grammar's characters is refused or read as serverFromString reads it."""
        self.check(description)

    def test_extraCertChain(self) -> None:
        """The chain file's certificates are sent after the server's, as with serverFromString."""
        description = (
            f"ssl:0:privateKey={self.pki.keyPath}:certKey={self.pki.certPath}"
            f":extraCertChain={self.pki.caPath}"
        )
        reactor = MemoryReactorClock()
        serverFromString(reactor, description).listen(Factory())
        theirs = reactor.sslServers[0][2]
        ours = parseEndpoint(description).tls.contextFactory()  # type: ignore[union-attr]
        dump = lambda chain: [crypto.dump_certificate(crypto.FILETYPE_PEM, c) for c in chain]
        self.assertEqual(len(ours.extraCertChain), 1)
        self.assertEqual(dump(ours.extraCertChain), dump(theirs.extraCertChain))


class SplitTests(SynchronousTestCase):
    """
    L{splitDescription} follows the escaping rules of Twisted's parser.
    """

    def test_firstEqualsSplits(self) -> None:
        """The first unescaped = makes a keyword; later ones belong to the value."""
        self.assertEqual(splitDescription("tcp:80:a=b=c"), (["tcp", "80"], {"a": "b=c"}))

    def test_escapedEquals(self) -> None:
        """An escaped = is part of the keyword, or of a positional argument."""
        self.assertEqual(splitDescription("tcp:a\\=b=c"), (["tcp"], {"a=b": "c"}))
        self.assertEqual(splitDescription("tcp:a\\=b"), (["tcp", "a=b"], {}))

    def test_escapedColon(self) -> None:
        """An escaped colon does not end an argument."""
        self.assertEqual(
            splitDescription("unix:/tmp/a\\:b.sock:mode=600"),
            (["unix", "/tmp/a:b.sock"], {"mode": "600"}),
        )

    def test_loneBackslash(self) -> None:
        """A string ending in a lone backslash is refused (Twisted raises RuntimeError)."""
        self.assertRaises(EndpointError, splitDescription, "tcp:80\\")


class ParseTests(SynchronousTestCase):
    """
    L{parseEndpoint}: the value, and the one-line reasons for a refusal.
    """

    def test_tcp(self) -> None:
        """A tcp endpoint: port, interface and backlog, positional or keyword."""
        self.assertEqual(
            parseEndpoint("tcp:8080:127.0.0.1:backlog=9"),
            ListenEndpoint("tcp:8080:127.0.0.1:backlog=9", "tcp", 8080, "127.0.0.1", 9),
        )

    def test_ssl(self) -> None:
        """An ssl endpoint keeps its files' names; they are not read while parsing."""
        endpoint = parseEndpoint("ssl:443:privateKey=/no/k.pem:certKey=/no/c.pem")
        self.assertEqual((endpoint.port, endpoint.interface, endpoint.backlog), (443, "", None))
        self.assertEqual(endpoint.tls.privateKey, "/no/k.pem")  # type: ignore[union-attr]
        self.assertEqual(endpoint.tls.certKey, "/no/c.pem")  # type: ignore[union-attr]
        self.assertRaises(OSError, endpoint.tls.contextFactory)  # type: ignore[union-attr]

    def test_unix(self) -> None:
        """A unix endpoint: its path, mode (octal) and lock file flag."""
        endpoint = parseEndpoint("unix:/run/u.sock:mode=600:lockfile=0")
        self.assertEqual(
            (endpoint.path, endpoint.mode, endpoint.lockfile, endpoint.family),
            ("/run/u.sock", 0o600, False, socket.AF_UNIX),
        )

    def test_familyByInterface(self) -> None:
        """The address family follows the interface, as in Twisted's listenTCP, whatever the type."""
        self.assertEqual(parseEndpoint("tcp:80:interface=\\:\\:1").family, socket.AF_INET6)
        self.assertEqual(parseEndpoint("tcp6:80:interface=127.0.0.1").family, socket.AF_INET)
        self.assertEqual(parseEndpoint("tcp6:80").family, socket.AF_INET6)
        self.assertEqual(parseEndpoint("ssl:80").family, socket.AF_INET)
        self.assertIsNone(parseEndpoint("systemd:domain=INET:index=0").family)

    def test_refusals(self) -> None:
        """Each mistake is refused with a reason that names it."""
        for description, reason in [
            ("", "no endpoint type"),
            ("a=b", "no endpoint type"),
            ("tcp", "needs a port"),
            ("tcp:http", "port 'http' is not a number"),
            ("tcp:70000", "port 70000 is not between 0 and 65535"),
            ("tcp:-1", "port -1 is not between 0 and 65535"),
            ("tcp:80:backlog=many", "backlog 'many' is not a number"),
            ("tcp:80:intreface=127.0.0.1", "tcp has no option 'intreface'"),
            ("tcp:80:127.0.0.1:interface=\\:\\:1", "interface given twice"),
            ("tcp:80:127.0.0.1:5:x", "too many arguments for tcp (at most 3)"),
            ("unix:/x:mode=rw", "mode 'rw' is not a number"),
            ("unix:/x:lockfile=yes", "lockfile 'yes' is not a number"),
            ("ssl:443:sslmethod=NOPE", "sslmethod 'NOPE' is not a method"),
            ("tcp:80\\", "ends with a lone backslash"),
        ]:
            error = self.assertRaises(EndpointError, parseEndpoint, description)
            self.assertIn(reason, str(error), description)

    def test_otherKinds(self) -> None:
        """A type not read here is kept by name, with no address (and is not loopback)."""
        endpoint = parseEndpoint("systemd:domain=INET:index=0")
        self.assertEqual((endpoint.kind, endpoint.port, endpoint.path), ("systemd", None, None))
        self.assertFalse(endpoint.isLoopback)
        # Twisted's own types are lower case: TCP is not tcp.
        self.assertFalse(parseEndpoint("TCP:80:interface=127.0.0.1").isLoopback)
        self.assertTrue(parseEndpoint("TCP6:80:interface=\\:\\:1").isLoopback)

    def test_defaultBacklog(self) -> None:
        """withDefaultBacklog fills in a missing backlog only, and only where there is one."""
        self.assertEqual(parseEndpoint("tcp:80").withDefaultBacklog(1024).backlog, 1024)
        self.assertEqual(parseEndpoint("tcp:80:backlog=5").withDefaultBacklog(1024).backlog, 5)
        self.assertEqual(parseEndpoint("unix:/x").withDefaultBacklog(1024).backlog, 1024)
        self.assertIsNone(parseEndpoint("systemd:index=0").withDefaultBacklog(1024).backlog)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class ListenOptionTests(SynchronousTestCase):
    """
    C{--listen} is refused in one line, never with a traceback.
    """

    def test_crashesBecomeUsageErrors(self) -> None:
        """Strings that made serverFromString raise IndexError, RuntimeError or AttributeError get a usage error."""
        for description, reason in [
            ("a=b", "no endpoint type"),
            ("tcp:80\\", "lone backslash"),
            ("ssl:80:privateKey=/etc/hostname:sslmethod=NOPE", "sslmethod 'NOPE'"),
        ]:
            error = self.assertRaises(UsageError, parse, "--listen", description)
            self.assertIn(f"bad --listen {description!r}: ", str(error))
            self.assertIn(reason, str(error))

    def test_portOutOfRange(self) -> None:
        """A port above 65535 is refused when the options are read, not when binding."""
        error = self.assertRaises(UsageError, parse, "--listen", "tcp:70000:interface=127.0.0.1")
        self.assertIn("port 70000 is not between 0 and 65535", str(error))

    def test_parsedOnce(self) -> None:
        """Options keep each --listen string and its parsed value, in order."""
        options = parse("--listen", "tcp:8081:interface=127.0.0.1", "--listen", "unix:/tmp/u.sock")
        self.assertEqual(
            options["endpoints"],
            [parseEndpoint("tcp:8081:interface=127.0.0.1"), parseEndpoint("unix:/tmp/u.sock")],
        )
        self.assertEqual(parse()["endpoints"], [parseEndpoint("tcp:8080:interface=127.0.0.1")])

    def test_workersRefuseOtherKinds(self) -> None:
        """--workers with an endpoint whose socket the supervisor cannot make is refused up front."""
        error = self.assertRaises(
            UsageError, parse, "--workers", "2", "--insecure-no-auth",
            "--listen", "tcp:0:interface=127.0.0.1", "--listen", "stdio:",
        )
        self.assertIn("--listen 'stdio:': --workers cannot share a stdio endpoint", str(error))
        parse("--listen", "stdio:", "--insecure-no-auth")

    def test_inheritParsed(self) -> None:
        """--inherit is parsed too, and an endpoint the supervisor cannot make is refused."""
        options = parse("--inherit", "4=ssl:0:privateKey=k.pem:interface=127.0.0.1")
        self.assertEqual(options["inherit"][0][1].kind, "ssl")
        self.assertRaises(UsageError, parse, "--inherit", "4=systemd:index=0")
        self.assertRaises(UsageError, parse, "--inherit", "4=tcp:http")

    def test_workerChecksWhatItInherits(self) -> None:
        """A worker checks for an exposed listener among the endpoints it inherits."""
        error = self.assertRaises(UsageError, parse, "--inherit", "4=tcp:0:interface=0.0.0.0")
        self.assertIn("reachable from the network", str(error))
        parse("--inherit", "4=tcp:0:interface=0.0.0.0", "--insecure-no-auth")


class AdoptedTLSTests(SynchronousTestCase):
    """
    A worker serves an inherited C{ssl:} socket with the certificate its
    endpoint names.
    """

    def test_adoptedWithTLS(self) -> None:
        """The adopted port's factory wraps the site in TLS with the endpoint's certificate."""
        pki = makePKI(os.path.abspath(self.mktemp()))
        description = f"ssl:0:privateKey={pki.keyPath}:certKey={pki.certPath}:interface=127.0.0.1"
        reactor = MemoryReactorClock()
        options = parse("--root", self.mktemp(), "--inherit", f"7={description}")
        top = makeService(options, reactor)
        top.startService()
        self.addCleanup(top.stopService)
        fd, family, factory = reactor.adoptedPorts[0]
        self.assertEqual((fd, family), (7, socket.AF_INET))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        expected = MemoryReactorClock()
        serverFromString(expected, description).listen(Factory())
        self.assertEqual(
            _certificate(parseEndpoint(description).tls.contextFactory()),  # type: ignore[union-attr]
            _certificate(expected.sslServers[0][2]),
        )

    def test_unreadableFilesOneLine(self) -> None:
        """A worker whose ssl: files cannot be read stops with one line that names the endpoint."""
        description = "ssl:0:privateKey=/no/such/key.pem:interface=127.0.0.1"
        options = parse("--root", self.mktemp(), "--inherit", f"7={description}")
        error = self.assertRaises(StartupError, makeService, options, MemoryReactorClock())
        self.assertIn(f"--listen {description}: ", str(error))
        self.assertIn("No such file", str(error))
