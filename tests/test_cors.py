"""
Tests for L{uploadsvc.protocol.cors}: configured origins, preflights, and
the headers every answer to an allowed origin carries.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.protocol.cors import (
    ALLOWED_HEADERS,
    ALLOWED_METHODS,
    EXPOSED_HEADERS,
    CorsPolicy,
    Decorate,
    OriginError,
    Preflight,
    decide,
    parseOrigin,
)

APP = "https://app.example"
POLICY = CorsPolicy(frozenset({APP, "http://localhost:3000"}))


def headers(decision: Preflight | Decorate) -> dict[bytes, bytes]:
    out = dict(decision.headers)
    assert len(out) == len(decision.headers), "a header twice"
    return out


class OriginTests(SynchronousTestCase):
    """
    L{parseOrigin}: configured origins, in the form browsers send.
    """

    def test_serialized(self) -> None:
        """Lower case, default ports dropped, other ports kept."""
        self.assertEqual(parseOrigin("HTTPS://App.Example"), APP)
        self.assertEqual(parseOrigin("https://app.example:443"), APP)
        self.assertEqual(parseOrigin("http://app.example:80"), "http://app.example")
        self.assertEqual(parseOrigin("http://localhost:3000"), "http://localhost:3000")
        self.assertEqual(parseOrigin("https://[2001:db8::1]:8443"), "https://[2001:db8::1]:8443")

    def test_refused(self) -> None:
        """Paths, user info, other schemes, bad ports and hosts are refused."""
        for bad in [
            "app.example", "https://app.example/", "https://app.example/x", "ftp://app.example",
            "https://u@app.example", "https://app.example:0", "https://app.example:65536",
            "https://app..example", "https://", "null", "*.example.org", "https://a.example?x",
            "https://.app.example",
        ]:
            with self.assertRaises(OriginError, msg=bad):
                parseOrigin(bad)

    def test_policyChecks(self) -> None:
        """* goes neither with credentials nor with other origins."""
        with self.assertRaises(OriginError):
            CorsPolicy(frozenset({"*"}), credentials=True)
        with self.assertRaises(OriginError):
            CorsPolicy(frozenset({"*", APP}))
        with self.assertRaises(OriginError):
            CorsPolicy(frozenset({APP}), maxAge=86401)


class DecideTests(SynchronousTestCase):
    """
    L{decide}.
    """

    def test_offByDefault(self) -> None:
        """Without origins nothing changes, preflight or not."""
        for method, origin, acrm in [
            (b"OPTIONS", APP.encode(), b"PUT"), (b"PUT", APP.encode(), None), (b"PUT", None, None),
        ]:
            self.assertEqual(decide(CorsPolicy(), method, origin, acrm), Decorate(()))

    def test_preflightAllowed(self) -> None:
        """
        A preflight from a configured origin is answered 200 with that
        origin, every method and request header, the max age, and Vary.
        """
        decision = decide(POLICY, b"OPTIONS", APP.encode(), b"PUT")
        self.assertIsInstance(decision, Preflight)
        assert isinstance(decision, Preflight)
        self.assertEqual(decision.status, 200)
        h = headers(decision)
        self.assertEqual(h[b"Access-Control-Allow-Origin"], APP.encode())
        self.assertEqual(h[b"Vary"], b"Origin")
        self.assertEqual(h[b"Access-Control-Max-Age"], b"600")
        methods = h[b"Access-Control-Allow-Methods"].split(b", ")
        for method in [b"PUT", b"POST", b"HEAD", b"PATCH", b"DELETE", b"OPTIONS", b"GET"]:
            self.assertIn(method, methods)
        allowed = {v.lower() for v in h[b"Access-Control-Allow-Headers"].split(b", ")}
        for name in [
            b"content-range", b"content-type", b"repr-digest", b"want-repr-digest",
            b"content-digest", b"authorization", b"tus-resumable", b"upload-offset",
            b"upload-length", b"upload-metadata", b"upload-defer-length", b"upload-concat",
            b"upload-checksum", b"upload-complete", b"upload-draft-interop-version",
            b"x-http-method-override", b"x-requested-with", b"content-disposition",
        ]:
            self.assertIn(name, allowed)
        self.assertNotIn(b"Access-Control-Allow-Credentials", h)

    def test_preflightAllowsDownloadHeaders(self) -> None:
        """
        A preflight allows every request header a download uses (a range,
        a resumed range, and each conditional header), so a browser can
        fetch and resume a file.
        """
        decision = decide(POLICY, b"OPTIONS", APP.encode(), b"GET")
        assert isinstance(decision, Preflight)
        allowed = {v.lower() for v in headers(decision)[b"Access-Control-Allow-Headers"].split(b", ")}
        for name in [
            b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
            b"if-unmodified-since",
        ]:
            with self.subTest(name=name):
                self.assertIn(name, allowed)

    def test_preflightDenied(self) -> None:
        """
        A preflight from another origin (or C{null}, or a near miss) is
        refused with 403 and no CORS header a browser would trust.
        """
        for origin in [b"https://evil.example", b"null", b"https://app.example:444",
                       b"http://app.example", b"https://APP.example", b"https://app.example/"]:
            decision = decide(POLICY, b"OPTIONS", origin, b"PUT")
            assert isinstance(decision, Preflight)
            self.assertEqual(decision.status, 403)
            self.assertEqual(
                [n for n, _ in decision.headers if n.startswith(b"Access-Control")], []
            )
            self.assertEqual(decision.reason.count("\n"), 0)

    def test_optionsWithoutRequestMethod(self) -> None:
        """An OPTIONS without Access-Control-Request-Method is no preflight."""
        decision = decide(POLICY, b"OPTIONS", APP.encode(), None)
        self.assertIsInstance(decision, Decorate)

    def test_actualAllowed(self) -> None:
        """
        Any other request from a configured origin goes on, its answer
        carrying the origin and every header a client reads, exposed.
        """
        decision = decide(POLICY, b"PUT", APP.encode(), None)
        assert isinstance(decision, Decorate)
        h = headers(decision)
        self.assertEqual(h[b"Access-Control-Allow-Origin"], APP.encode())
        self.assertEqual(h[b"Vary"], b"Origin")
        exposed = set(h[b"Access-Control-Expose-Headers"].split(b", "))
        for name in [
            b"Location", b"Upload-Offset", b"Upload-Length", b"Upload-Complete", b"Upload-Limit",
            b"Upload-Expires", b"Tus-Resumable", b"Tus-Version", b"Tus-Extension",
            b"Tus-Max-Size", b"Tus-Checksum-Algorithm", b"Upload-Metadata",
            b"Upload-Defer-Length", b"Upload-Concat", b"Upload-Draft-Interop-Version",
            b"Repr-Digest", b"Retry-After",
        ]:
            self.assertIn(name, exposed)

    def test_actualForeign(self) -> None:
        """A request from another origin, or none, gets only Vary."""
        for origin in [b"https://evil.example", None, b"null"]:
            self.assertEqual(decide(POLICY, b"PUT", origin, None), Decorate(((b"Vary", b"Origin"),)))

    def test_credentials(self) -> None:
        """With credentials on, answers to allowed origins say so."""
        policy = CorsPolicy(frozenset({APP}), credentials=True, maxAge=60)
        for decision in [
            decide(policy, b"OPTIONS", APP.encode(), b"PATCH"),
            decide(policy, b"HEAD", APP.encode(), None),
        ]:
            h = headers(decision)
            self.assertEqual(h[b"Access-Control-Allow-Credentials"], b"true")
            self.assertEqual(h[b"Access-Control-Allow-Origin"], APP.encode())
        self.assertEqual(
            headers(decide(policy, b"OPTIONS", APP.encode(), b"PUT"))[b"Access-Control-Max-Age"],
            b"60",
        )

    def test_anyOrigin(self) -> None:
        """With *, every origin gets a literal * and no Vary."""
        policy = CorsPolicy(frozenset({"*"}))
        h = headers(decide(policy, b"PUT", b"https://whoever.example", None))
        self.assertEqual(h[b"Access-Control-Allow-Origin"], b"*")
        self.assertNotIn(b"Vary", h)
        decision = decide(policy, b"OPTIONS", b"https://whoever.example", b"PUT")
        assert isinstance(decision, Preflight)
        self.assertEqual(decision.status, 200)
        # A null origin (a sandboxed frame, a file: page) is not an origin.
        decision = decide(policy, b"OPTIONS", b"null", b"PUT")
        assert isinstance(decision, Preflight)
        self.assertEqual(decision.status, 403)

    @given(st.binary(max_size=60), st.sampled_from([b"OPTIONS", b"PUT", b"GET"]),
           st.one_of(st.none(), st.binary(max_size=10)))
    def test_onlyConfiguredOriginsAllowed(
        self, origin: bytes, method: bytes, acrm: bytes | None
    ) -> None:
        """No origin but a configured one is ever named in an answer."""
        h = headers(decide(POLICY, method, origin, acrm))
        allowOrigin = h.get(b"Access-Control-Allow-Origin")
        if allowOrigin is not None:
            self.assertIn(allowOrigin.decode(), POLICY.origins)
            self.assertEqual(allowOrigin, origin)

    def test_listsWellFormed(self) -> None:
        """The lists hold distinct header and method names."""
        for names in (ALLOWED_METHODS, ALLOWED_HEADERS, EXPOSED_HEADERS):
            self.assertEqual(len(set(n.lower() for n in names)), len(names))
