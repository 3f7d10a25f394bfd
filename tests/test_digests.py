"""
Tests for L{uploadsvc.protocol.digests}: C{Content-Digest} and
C{Repr-Digest} (RFC 9530), docs/protocol.md section 4.
"""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest
from uploadsvc.protocol.digests import (
    SUPPORTED,
    DigestSet,
    formatDigest,
    newHasher,
    parseDigestHeader,
)
from uploadsvc.testing.strategies import digestFields

_properties = settings(max_examples=300, deadline=None)

# RFC 9530 section 2: the digests of the body {"hello": "world"}.
HELLO = b'{"hello": "world"}'
HELLO_SHA256 = b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
HELLO_SHA512 = (
    b"sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7"
    b"BNNyealdVLvRwEmTHWXvJwew==:"
)
SHA256 = hashlib.sha256(HELLO).digest()
SHA512 = hashlib.sha512(HELLO).digest()
B64_256 = base64.b64encode(SHA256)
B64_512 = base64.b64encode(SHA512)

# (field value, expected supported digests)
VALID: list[tuple[bytes, dict[str, bytes]]] = [
    (HELLO_SHA256, {"sha-256": SHA256}),
    (HELLO_SHA512, {"sha-512": SHA512}),
    (HELLO_SHA256 + b", " + HELLO_SHA512, {"sha-256": SHA256, "sha-512": SHA512}),
    (HELLO_SHA256 + b",\t" + HELLO_SHA512, {"sha-256": SHA256, "sha-512": SHA512}),
    (HELLO_SHA256 + b"  ,  " + HELLO_SHA512, {"sha-256": SHA256, "sha-512": SHA512}),
    (b"  " + HELLO_SHA256, {"sha-256": SHA256}),
    (HELLO_SHA256 + b";foo=1;bar", {"sha-256": SHA256}),
    (b"md5=:AAAA:, " + HELLO_SHA256, {"sha-256": SHA256}),
    (b"unixsum=30, " + HELLO_SHA256 + b", adler=(1 2);x", {"sha-256": SHA256}),
    (
        b'x="str\\"ing", y=tok/en, z=?1, w=-1.5, v=@1700000000, ' + HELLO_SHA256,
        {"sha-256": SHA256},
    ),
    (b'x=%"caf%c3%a9", ' + HELLO_SHA256, {"sha-256": SHA256}),
    (b"md5=:AAAA:", {}),
    (b"", {}),
    (
        b"sha-256=:" + base64.b64encode(b"\x00" * 32) + b":, " + HELLO_SHA256,
        {"sha-256": SHA256},
    ),
    (b"sha-256=:" + B64_256.rstrip(b"=") + b":", {"sha-256": SHA256}),
    (b"sha-512=:" + B64_512.rstrip(b"=") + b":", {"sha-512": SHA512}),
]

INVALID = [
    b"sha-256=:AAAA:",  # too short
    b"sha-512=" + HELLO_SHA256[8:],  # 32 bytes for sha-512
    b"sha-256=:" + B64_512 + b":",  # 64 bytes for sha-256
    b"sha-256",  # boolean true
    b"sha-256=?1",
    b"sha-256=" + B64_256,  # no colons: not a byte sequence
    b'sha-256="' + B64_256 + b'"',  # a string
    b"sha-256=(" + HELLO_SHA256[8:] + b")",  # an inner list
    b"sha-256=42",
    HELLO_SHA256 + b",",  # trailing comma
    HELLO_SHA256 + b",,",
    b", " + HELLO_SHA256,
    HELLO_SHA256 + b" " + HELLO_SHA512,  # missing comma
    HELLO_SHA256[:-1],  # unterminated byte sequence
    b"sha-256=:" + B64_256[:-2] + b"!=:",  # not base64
    b"sha-256=:" + B64_256 + b"=:",  # too much padding
    b"md5=:A:, " + HELLO_SHA256,  # one base64 character cannot be
    b"md5=:AAAAA===:, " + HELLO_SHA256,
    b"md5=:AA=A:, " + HELLO_SHA256,
    b"SHA-256=" + HELLO_SHA256[8:],  # keys are lowercase
    b"sha 256=" + HELLO_SHA256[8:],
    b"=" + HELLO_SHA256[8:],
    b"sha-256 =" + HELLO_SHA256[8:],
    b"sha-256= " + HELLO_SHA256[8:],
    b"md5=:AAAA:, " + HELLO_SHA256 + b"\xff",  # non-ASCII
    b"md5=\"unterminated, " + HELLO_SHA256,
    b"md5=\"bad\\escape\", " + HELLO_SHA256,
    b"md5=(1 2, " + HELLO_SHA256,
    b"md5=1234567890123456, " + HELLO_SHA256,  # integer of 16 digits
    b"md5=1., " + HELLO_SHA256,
    b"md5=1.2345, " + HELLO_SHA256,
    b"md5=?2, " + HELLO_SHA256,
    b"md5=@1.5, " + HELLO_SHA256,
    b'md5=%"%C3%A9", ' + HELLO_SHA256,  # display strings use lowercase hex
    b"md5=;a, " + HELLO_SHA256,
]


class ParseTests(SynchronousTestCase):
    """
    L{parseDigestHeader} reads the digest fields of RFC 9530.
    """

    def test_valid(self) -> None:
        """
        Every field of the valid table gives its expected digests, in order.
        """
        for field, expected in VALID:
            self.assertEqual(
                (field, parseDigestHeader(field)),
                (field, DigestSet(tuple(expected.items()))),
            )

    def test_invalid(self) -> None:
        """
        Every field of the invalid table is refused with C{bad-digest} (400)
        and a one-line reason.
        """
        for field in INVALID:
            try:
                result = parseDigestHeader(field)
            except BadRequest as error:
                self.assertEqual((field, error.code), (field, "bad-digest"))
                self.assertEqual(error.status, 400)
                self.assertNotIn("\n", error.reason)
            else:
                self.fail(f"{field!r} parsed as {result!r}")

    def test_lastWins(self) -> None:
        """
        When an algorithm repeats, its last value wins.
        """
        zeros = b"sha-256=:" + base64.b64encode(b"\x00" * 32) + b":"
        self.assertEqual(
            parseDigestHeader(HELLO_SHA256 + b", " + zeros).get("sha-256"),
            b"\x00" * 32,
        )

    def test_onlyUnknown(self) -> None:
        """
        A field with only unknown algorithms gives an empty, false set.
        """
        result = parseDigestHeader(b"md5=:AAAA:, crc32c=:AAAAAA==:")
        self.assertFalse(result)
        self.assertEqual(result, DigestSet(()))

    def test_get(self) -> None:
        """
        C{get} returns the raw digest of an algorithm present, and L{None}
        for one absent.
        """
        result = parseDigestHeader(HELLO_SHA256)
        self.assertTrue(result)
        self.assertEqual(result.get("sha-256"), SHA256)
        self.assertIsNone(result.get("sha-512"))
        self.assertIsNone(result.get("md5"))


class FormatTests(SynchronousTestCase):
    """
    L{formatDigest} and L{newHasher} produce RFC 9530 digests.
    """

    def test_rfcExamples(self) -> None:
        """
        The RFC 9530 examples are reproduced byte for byte.
        """
        for alg, field in [("sha-256", HELLO_SHA256), ("sha-512", HELLO_SHA512)]:
            hasher = newHasher(alg)
            hasher.update(HELLO)
            self.assertEqual(formatDigest(alg, hasher.digest()), field)

    def test_newHasherFresh(self) -> None:
        """
        Each call to L{newHasher} gives an independent object.
        """
        first = newHasher("sha-256")
        first.update(b"x")
        self.assertEqual(
            newHasher("sha-256").hexdigest(), hashlib.sha256().hexdigest()
        )

    def test_supported(self) -> None:
        """
        sha-256 and sha-512 are supported; anything else is a programming
        error for L{newHasher} and L{formatDigest}.
        """
        self.assertEqual(SUPPORTED, ("sha-256", "sha-512"))
        self.assertRaises(ValueError, newHasher, "sha1")
        self.assertRaises(ValueError, formatDigest, "md5", b"\x00" * 16)
        self.assertRaises(ValueError, formatDigest, "sha-256", b"\x00" * 31)


class DigestPropertyTests(SynchronousTestCase):
    """
    Properties of the digest field parser over generated inputs.
    """

    @_properties
    @given(digestFields())
    def test_validParses(self, pair: tuple[bytes, dict[str, bytes]]) -> None:
        """
        Every generated field, unknown members and parameters included,
        gives exactly its supported digests.
        """
        field, expected = pair
        result = parseDigestHeader(field)
        self.assertEqual(dict(result.values), expected)
        self.assertEqual(bool(result), bool(expected))

    @_properties
    @given(
        st.sampled_from(SUPPORTED),
        st.binary(max_size=200),
    )
    def test_roundTrip(self, alg: str, body: bytes) -> None:
        """
        A formatted digest parses back to the same raw digest.
        """
        hasher = newHasher(alg)
        hasher.update(body)
        digest = hasher.digest()
        self.assertEqual(parseDigestHeader(formatDigest(alg, digest)).get(alg), digest)

    @_properties
    @given(
        st.one_of(
            st.binary(max_size=60),
            st.lists(
                st.sampled_from(
                    [b"sha-256", b"md5", b"=", b":", b",", b" ", b";", b"(", b")",
                     b'"', b"\\", b"?1", b"1.5", b"@", b"%", b"AAAA", b"A", b"a",
                     b"*"]
                ),
                max_size=20,
            ).map(b"".join),
        )
    )
    def test_onlyBadDigest(self, field: bytes) -> None:
        """
        On arbitrary bytes the parser returns a L{DigestSet} of well-sized
        digests or raises L{BadRequest} with C{bad-digest}, and nothing else.
        """
        try:
            result = parseDigestHeader(field)
        except BadRequest as error:
            self.assertEqual(error.code, "bad-digest")
        else:
            for alg, digest in result.values:
                self.assertIn(alg, SUPPORTED)
                self.assertEqual(len(digest), newHasher(alg).digest_size)
