"""
Tests for L{uploadsvc.protocol.forwarded}: the strict parsers of a trusted
proxy's headers, the URLs built from them, and which peers are trusted;
examples and hypothesis properties.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.protocol.forwarded import (
    ForwardedError,
    PublicBase,
    TrustedProxies,
    absoluteURL,
    parseForwarded,
    parseHost,
    parsePrefix,
    parseScheme,
    publicBase,
)
from uploadsvc.testing.forwardedstrategies import (
    forwardedHeaders,
    hosts,
    ipPeers,
    networks,
    prefixes,
    schemes,
)


class ForwardedParserTests(SynchronousTestCase):
    """
    L{parseForwarded} reads RFC 7239 and nothing else.
    """

    def test_examples(self) -> None:
        """The RFC's own examples parse into their elements."""
        self.assertEqual(
            parseForwarded([b'for="_gazonk"']), [{"for": "_gazonk"}]
        )
        self.assertEqual(
            parseForwarded([b'For="[2001:db8:cafe::17]:4711"']),
            [{"for": "[2001:db8:cafe::17]:4711"}],
        )
        self.assertEqual(
            parseForwarded([b"for=192.0.2.60;proto=http;by=203.0.113.43"]),
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        )
        self.assertEqual(
            parseForwarded([b"for=192.0.2.43, for=198.51.100.17"]),
            [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}],
        )

    def test_severalLines(self) -> None:
        """Header lines are one list, in order."""
        self.assertEqual(
            parseForwarded([b"for=a;proto=http", b"for=b;proto=https"]),
            [{"for": "a", "proto": "http"}, {"for": "b", "proto": "https"}],
        )

    def test_quotedPairs(self) -> None:
        """A quoted-string's quoted pairs are undone."""
        self.assertEqual(parseForwarded([b'host="a\\"b"']), [{"host": 'a"b'}])

    def test_malformed(self) -> None:
        """Anything else is refused, not repaired."""
        for value in [
            b"", b"for", b"for=", b"=a", b"for=a;", b"for=a,", b",for=a", b"for=a,,for=b",
            b'for="a', b"for=a b", b"for=a;for=b", b"for=a;FOR=b", b"for=\x00",
            b'host="\x7f"', b"for=a;proto=http x", b"host=a/b",
        ]:
            with self.assertRaises(ForwardedError, msg=value):
                parseForwarded([value])

    def test_tooLong(self) -> None:
        """A header longer than 4 KiB is refused."""
        with self.assertRaises(ForwardedError):
            parseForwarded([b"for=a," * 1000 + b"for=a"])

    @given(forwardedHeaders())
    def test_roundTrip(self, header: tuple[bytes, list[dict[str, str]]]) -> None:
        """Any header made of RFC 7239 elements parses back into them."""
        value, elements = header
        self.assertEqual(parseForwarded([value]), elements)

    @given(st.binary(max_size=200))
    def test_fuzzRefusesCleanly(self, value: bytes) -> None:
        """Arbitrary bytes parse or raise L{ForwardedError}, nothing else."""
        try:
            parseForwarded([value])
        except ForwardedError:
            pass


class ValueTests(SynchronousTestCase):
    """
    The scheme, host and prefix parsers.
    """

    def test_schemes(self) -> None:
        """http and https in any case; nothing else."""
        self.assertEqual(parseScheme("HTTPS"), "https")
        self.assertEqual(parseScheme("http"), "http")
        for bad in ["ftp", "", "https:", "javascript", "https ,http"]:
            with self.assertRaises(ForwardedError):
                parseScheme(bad)

    def test_hosts(self) -> None:
        """Names, IPv4 and bracketed IPv6 with ports, in lower case."""
        self.assertEqual(parseHost("Up.Example.ORG"), "up.example.org")
        self.assertEqual(parseHost("up.example.org:8443"), "up.example.org:8443")
        self.assertEqual(parseHost("192.0.2.1:80"), "192.0.2.1:80")
        self.assertEqual(parseHost("[2001:DB8::1]:443"), "[2001:db8::1]:443")
        for bad in [
            "", "a b", "a/b", "a@b", "evil.example/x", "a?b", "a#b", "[::1", "[zz::1]",
            "a:0", "a:65536", "a:", "a..b", ".a", "a.", "-", "a:b", "user:pw@host", "a\\b",
        ]:
            with self.assertRaises(ForwardedError, msg=bad):
                parseHost(bad)

    def test_prefixes(self) -> None:
        """Path-absolute prefixes without dot segments; / is none."""
        self.assertEqual(parsePrefix("/"), "")
        self.assertEqual(parsePrefix("/files/"), "/files")
        self.assertEqual(parsePrefix("/a/b%20c"), "/a/b%20c")
        for bad in [
            "", "files", "//x", "/a//b", "/a/../b", "/..", "/.", "/%2e%2E", "/a?b", "/a#b",
            "/a b", "/a,/b", "/%zz", "http://x/", "/a\\b",
        ]:
            with self.assertRaises(ForwardedError, msg=bad):
                parsePrefix(bad)

    @given(hosts())
    def test_hostsAuthority(self, host: str) -> None:
        """
        Every host accepted is the whole authority of a URL built with it:
        it can never carry a path, user info or another host.
        """
        accepted = parseHost(host)
        split = urlsplit(f"https://{accepted}/x")
        self.assertEqual(split.netloc, accepted)
        self.assertEqual(split.path, "/x")

    @given(st.text(max_size=60))
    def test_hostsFuzz(self, text: str) -> None:
        """Whatever is accepted as a host stays inside a URL's authority."""
        try:
            accepted = parseHost(text)
        except ForwardedError:
            return
        split = urlsplit(f"https://{accepted}/x")
        self.assertEqual((split.netloc, split.path, split.query), (accepted, "/x", ""))

    @given(prefixes())
    def test_prefixesAccepted(self, prefix: str) -> None:
        """Generated prefixes are accepted, without a trailing slash."""
        parsed = parsePrefix(prefix)
        self.assertFalse(parsed.endswith("/"))

    @given(st.text(max_size=40))
    def test_prefixesFuzz(self, text: str) -> None:
        """Whatever is accepted as a prefix is path-absolute and climbs nowhere."""
        try:
            parsed = parsePrefix(text)
        except ForwardedError:
            return
        if parsed:
            self.assertTrue(parsed.startswith("/"))
            self.assertNotIn("//", parsed)
            segments = parsed.split("/")[1:]
            self.assertFalse(set(segments) & {".", "..", ""})
            self.assertEqual(urlsplit("http://h" + parsed).path, parsed)


class PublicBaseTests(SynchronousTestCase):
    """
    L{publicBase}: what the headers together say.
    """

    def test_nothing(self) -> None:
        """No header: nothing is said."""
        self.assertTrue(publicBase([], [], [], []).empty)

    def test_xForwarded(self) -> None:
        """The X-Forwarded-* headers give scheme, host and prefix."""
        self.assertEqual(
            publicBase([], [b"https"], [b"Up.example.org"], [b"/files/"]),
            PublicBase("https", "up.example.org", "/files"),
        )

    def test_lastEntryCounts(self) -> None:
        """Of a list, the entry the nearest (trusted) proxy added counts."""
        self.assertEqual(
            publicBase([], [b"http, https"], [b"evil.example", b"up.example.org"], []),
            PublicBase("https", "up.example.org", None),
        )

    def test_forwardedWins(self) -> None:
        """Forwarded's last element wins over X-Forwarded-*; what it lacks they give."""
        base = publicBase(
            [b'for=1.2.3.4;host=evil.example;proto=http, for=5.6.7.8;host="up.example.org:8443"'],
            [b"https"], [b"other.example"], [],
        )
        self.assertEqual(base, PublicBase("https", "up.example.org:8443", None))
        base = publicBase([b"for=5.6.7.8;proto=https"], [b"http"], [b"x.example"], [])
        self.assertEqual(base, PublicBase("https", "x.example", None))

    def test_badValuesNamed(self) -> None:
        """A bad value is refused with the header's name in the reason."""
        cases = [
            ([b"proto=ftp"], [], [], [], "Forwarded"),
            ([b"for=a;;"], [], [], [], "Forwarded"),
            ([], [b"gopher"], [], [], "X-Forwarded-Proto"),
            ([], [], [b"a/b"], [], "X-Forwarded-Host"),
            ([], [], [], [b"/a/../b"], "X-Forwarded-Prefix"),
        ]
        for forwarded, proto, host, prefix, name in cases:
            with self.assertRaises(ForwardedError) as caught:
                publicBase(forwarded, proto, host, prefix)
            self.assertTrue(str(caught.exception).startswith(name + ":"), caught.exception)

    @given(
        st.lists(st.binary(max_size=40), max_size=2),
        st.lists(st.binary(max_size=20), max_size=2),
        st.lists(st.binary(max_size=40), max_size=2),
        st.lists(st.binary(max_size=40), max_size=2),
    )
    def test_fuzz(self, f: list[bytes], p: list[bytes], h: list[bytes], x: list[bytes]) -> None:
        """
        Any headers give a base or L{ForwardedError}; a URL built from a
        base has the base's scheme and host as its own.
        """
        try:
            base = publicBase(f, p, h, x)
        except ForwardedError:
            return
        url = absoluteURL(base, "http", "own.example", b"", b"/a.bin").decode("ascii")
        if base.scheme is None and base.host is None:
            self.assertTrue(url.startswith("/"))
            return
        split = urlsplit(url)
        self.assertEqual(split.scheme, base.scheme or "http")
        self.assertEqual(split.netloc, base.host or "own.example")
        self.assertTrue(split.path.endswith("/a.bin"))


class AbsoluteURLTests(SynchronousTestCase):
    """
    L{absoluteURL}: the URL handed out for a path of this server.
    """

    def test_nothingForwarded(self) -> None:
        """Without a trusted proxy's word the URL stays path-absolute."""
        self.assertEqual(absoluteURL(PublicBase(), "http", "", b"/up", b"/up/a.bin"), b"/up/a.bin")

    def test_schemeOnly(self) -> None:
        """A TLS proxy's scheme with the request's own host."""
        self.assertEqual(
            absoluteURL(PublicBase("https"), "http", "up.example.org", b"", b"/a%20b.bin"),
            b"https://up.example.org/a%20b.bin",
        )

    def test_prefixReplacesMount(self) -> None:
        """The proxy's prefix replaces the server's mount prefix."""
        self.assertEqual(
            absoluteURL(PublicBase("https", "h.example", "/files"), "http", "", b"/up", b"/up/a/b"),
            b"https://h.example/files/a/b",
        )
        self.assertEqual(
            absoluteURL(PublicBase(None, None, "/files"), "http", "", b"", b"/a/b"),
            b"/files/a/b",
        )
        self.assertEqual(
            absoluteURL(PublicBase(None, None, ""), "http", "", b"/up", b"/up/a"), b"/a"
        )

    @given(schemes(), hosts(), prefixes())
    def test_built(self, scheme: str, host: str, prefix: str) -> None:
        """The URL is the proxy's scheme, host and prefix, then the path."""
        base = publicBase([], [scheme.encode()], [host.encode()], [prefix.encode()])
        url = absoluteURL(base, "http", "", b"/mnt", b"/mnt/d/f.bin").decode("ascii")
        split = urlsplit(url)
        self.assertEqual(split.scheme, scheme.lower())
        self.assertEqual(split.netloc, host.lower())
        self.assertEqual(split.path, parsePrefix(prefix) + "/d/f.bin")


class TrustedProxiesTests(SynchronousTestCase):
    """
    Which peers are trusted.
    """

    def test_fromStrings(self) -> None:
        """Addresses, networks and unix."""
        proxies = TrustedProxies.fromStrings(["127.0.0.1", "10.0.0.0/8", "::1", "unix"])
        self.assertTrue(proxies.unix)
        self.assertTrue(proxies.trusts("127.0.0.1"))
        self.assertTrue(proxies.trusts("10.200.0.3"))
        self.assertTrue(proxies.trusts("::1"))
        self.assertTrue(proxies.trusts(None))
        self.assertFalse(proxies.trusts("127.0.0.2"))
        self.assertFalse(proxies.trusts("11.0.0.1"))
        self.assertFalse(proxies.trusts("::2"))

    def test_nobodyByDefault(self) -> None:
        """Nobody is trusted by default, unix sockets included."""
        proxies = TrustedProxies()
        self.assertFalse(proxies.enabled)
        self.assertFalse(proxies.trusts(None))
        self.assertFalse(proxies.trusts("127.0.0.1"))

    def test_unixOnlyWhenSaid(self) -> None:
        """A unix-socket peer is trusted only with unix."""
        self.assertFalse(TrustedProxies.fromStrings(["127.0.0.1"]).trusts(None))

    def test_mapped(self) -> None:
        """An IPv4-mapped IPv6 peer counts as its IPv4 address."""
        proxies = TrustedProxies.fromStrings(["192.0.2.0/24"])
        self.assertTrue(proxies.trusts("::ffff:192.0.2.7"))
        self.assertFalse(proxies.trusts("::ffff:192.0.3.7"))

    def test_badValues(self) -> None:
        """A value that is no address, network or unix is refused, naming it."""
        for bad in ["localhost", "10.0.0.1/8", "10.0.0.0/33", "", "UNIX", "*"]:
            with self.assertRaises(ValueError) as caught:
                TrustedProxies.fromStrings([bad])
            self.assertIn(repr(bad), str(caught.exception))

    def test_garbagePeer(self) -> None:
        """A peer that is no address is not trusted."""
        self.assertFalse(TrustedProxies.fromStrings(["0.0.0.0/0"]).trusts("nonsense"))

    @settings(max_examples=200)
    @given(ipPeers(), networks())
    def test_trustsOracle(
        self, peer: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ) -> None:
        """Trust is membership of the (IPv4-unmapped) peer in a network."""
        proxies = TrustedProxies.fromStrings([str(network)])
        address = ipaddress.ip_address(peer)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        expected = address.version == network.version and address in network
        self.assertEqual(proxies.trusts(peer), expected)
