"""
The pure tus core (L{uploadsvc.protocol.tusheaders}, L{uploadsvc.protocol.tus}): each parser on a table of
cases, then fuzzed with hypothesis (L{uploadsvc.testing.tusstrategies}) as
the path parser is: every well-formed value parses to what it says, every
hostile one is refused with C{400}, and no input raises anything else.
"""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from uploadsvc.errors import (
    BadRequest, Conflict, Forbidden, PreconditionFailed, TooLarge, UnsupportedMediaType,
    UploadError,
)
from uploadsvc.protocol.decisions import Plan, Stored
from uploadsvc.protocol.tus import (
    PatchHeaders, declaredEnd, decideCreation, isFinal, parseTarget, planPatch, readPatch,
    retriesCompleted, tusPath,
)
from uploadsvc.protocol.tusheaders import (
    MAX_DIGITS, Checksum, Final, Partial, checkResumable, metadataDestination, parseChecksum,
    parseConcat, parseMetadata, parseNumber,
)
from uploadsvc.testing.tusstrategies import (
    checksums, concatValues, hostileChecksums, hostileConcat, hostileMetadata, metadataPairs,
)

ID = "0123456789abcdef" * 2


def headers(**fields: str) -> Headers:
    return Headers({k.replace("_", "-"): [v] for k, v in fields.items()})


class ParserTableTests(SynchronousTestCase):
    def test_resumable(self) -> None:
        """Only Tus-Resumable 1.0.0 passes; anything else is 412 naming the version."""
        checkResumable(b"1.0.0")
        for value in (None, b"1.0", b"0.2.2", b"1.0.0 ", b""):
            e = self.assertRaises(PreconditionFailed, checkResumable, value)
            self.assertEqual(e.headers, {b"Tus-Version": b"1.0.0"})

    def test_numbers(self) -> None:
        """Offsets and lengths are plain digits, at most 19 of them."""
        self.assertEqual(parseNumber(b"0", "Upload-Offset"), 0)
        self.assertEqual(parseNumber(b"9" * MAX_DIGITS, "Upload-Offset"), int("9" * MAX_DIGITS))
        for bad in (b"", b"-1", b"+1", b" 1", b"1.0", b"0x10", b"9" * 20, "١".encode()):
            self.assertRaises(BadRequest, parseNumber, bad, "Upload-Offset")

    def test_metadata(self) -> None:
        """Keys alone, empty values and OWS after commas are read; the raw value is kept."""
        value = b"filename d29ybGQ=, is_confidential,empty ,\ttype YQ=="
        meta = parseMetadata(value)
        self.assertEqual(
            meta.pairs,
            (("filename", b"world"), ("is_confidential", None), ("empty", b""), ("type", b"a")),
        )
        self.assertEqual(meta.raw, value)
        self.assertEqual(parseMetadata(None).pairs, ())

    def test_metadataRefused(self) -> None:
        """Duplicate keys, bad base64 and non-ASCII keys are 400."""
        for value in (b"a YQ==,a Yg==", b"a YQ", b"a Y*==", "é YQ==".encode(), b"a YQ==,,b"):
            self.assertRaises(BadRequest, parseMetadata, value)

    def test_destination(self) -> None:
        """relativePath wins over filename (Uppy's forms read as meant); both obey section 1."""
        meta = parseMetadata(b"filename YS5iaW4=,relativePath ZC9hLmJpbg==")
        path = metadataDestination(meta, b"/up")
        assert path is not None
        self.assertEqual((path.relative, path.location), ("d/a.bin", b"/up/d/a.bin"))
        self.assertIsNone(metadataDestination(parseMetadata(b"type YQ==")))
        uppy = parseMetadata(
            b"filename " + base64.b64encode(b"hi.jpeg") + b",relativePath "
            + base64.b64encode(b"/simpsons/hi.jpeg")
        )
        self.assertEqual(metadataDestination(uppy).relative, "simpsons/hi.jpeg")  # type: ignore[union-attr]
        plain = parseMetadata(b"filename " + base64.b64encode(b"a.bin") + b",relativePath bnVsbA==")
        self.assertEqual(metadataDestination(plain).relative, "a.bin")  # type: ignore[union-attr]
        for name in (b"//x", b"/../x"):
            meta = parseMetadata(b"relativePath " + base64.b64encode(name))
            self.assertRaises(BadRequest, metadataDestination, meta)
        for bad in (b"../x", b"/abs", b".dot", b"a//b", b"\xff"):
            meta = parseMetadata(b"filename " + base64.b64encode(bad))
            self.assertRaises(BadRequest, metadataDestination, meta)

    def test_concat(self) -> None:
        """partial, or final; with our own upload URLs (paths or absolute URLs)."""
        self.assertEqual(parseConcat(b"partial"), Partial())
        self.assertEqual(
            parseConcat(b"final;/up/.tus/" + ID.encode() + b" http://h:1/up/.tus/" + ID[::-1].encode(), b"/up"),
            Final((ID, ID[::-1])),
        )
        for bad in (b"final;/.tus/" + ID.encode(), b"final;", b"partial;x", b"Final;/.tus/" + ID.encode()):
            self.assertRaises(BadRequest, parseConcat, bad, b"/up")

    def test_checksum(self) -> None:
        """sha1, sha256 and md5 with a digest of their length; anything else is 400."""
        self.assertEqual(
            parseChecksum(b"md5 " + base64.b64encode(b"x" * 16)), Checksum("md5", b"x" * 16)
        )
        for bad in (b"md5", b"md5 ", b"crc32 AAAAAA==", b"md5 " + base64.b64encode(b"x" * 15)):
            self.assertRaises(BadRequest, parseChecksum, bad)

    def test_target(self) -> None:
        """Only the collection and 32-hex-digit ids are tus URLs."""
        self.assertIsNone(parseTarget(b"/"))
        self.assertIsNone(parseTarget(b""))
        self.assertEqual(parseTarget(b"/" + ID.encode()), ID)
        for bad in (b"/x", b"/" + ID.encode() + b"/", b"/" + ID.upper().encode(), b"//" + ID.encode()):
            self.assertRaises(UploadError, parseTarget, bad)
        self.assertEqual(tusPath(b"/up/.tus/x", b"/up/"), b"/x")
        self.assertIsNone(tusPath(b"/.tusk", b""))
        self.assertIsNone(tusPath(b"/.tus/x", b"/up"))


class DecisionTests(SynchronousTestCase):
    def test_creationOrder(self) -> None:
        """Creation refuses 412 before 400 before 413."""
        self.assertRaises(
            PreconditionFailed, decideCreation, headers(Upload_Length="x"), b"", 10
        )
        self.assertRaises(
            BadRequest, decideCreation,
            headers(Tus_Resumable="1.0.0", Upload_Length="99", Upload_Metadata="a YQ"), b"", 10,
        )
        self.assertRaises(
            TooLarge, decideCreation, headers(Tus_Resumable="1.0.0", Upload_Length="11"), b"", 10
        )
        creation = decideCreation(
            headers(Tus_Resumable="1.0.0", Upload_Defer_Length="1", Upload_Concat="partial",
                    Upload_Metadata="filename YQ=="), b"", 10,
        )
        self.assertEqual((creation.total, creation.deferred, creation.destination), (None, True, None))

    def test_patchOrder(self) -> None:
        """A PATCH refuses 412 before 415 before 400."""
        self.assertRaises(PreconditionFailed, readPatch, headers(Content_Type="text/plain"))
        self.assertRaises(
            UnsupportedMediaType, readPatch, headers(Tus_Resumable="1.0.0", Upload_Offset="x")
        )
        self.assertRaises(
            BadRequest, readPatch,
            headers(Tus_Resumable="1.0.0", Content_Type="application/offset+octet-stream"),
        )

    def test_planPatch(self) -> None:
        """The offset must be the stored one; the body must fit the length."""
        stored = Stored(offset=3, total=10, incomplete=True)
        self.assertEqual(planPatch(stored, PatchHeaders(3, None, None), 4), Plan(False, 3, 0, 4, 10))
        self.assertEqual(planPatch(stored, PatchHeaders(3, None, None), None), Plan(False, 3, 0, 7, 10))
        e = self.assertRaises(Conflict, planPatch, stored, PatchHeaders(2, None, None), 4)
        self.assertEqual(e.headers[b"Upload-Offset"], b"3")
        self.assertRaises(TooLarge, planPatch, stored, PatchHeaders(3, None, None), 8)
        self.assertRaises(BadRequest, planPatch, stored, PatchHeaders(3, 11, None), 1)
        self.assertRaises(Forbidden, planPatch, stored, PatchHeaders(3, None, None), 1, True)
        deferred = Stored(offset=3, incomplete=True)
        self.assertEqual(
            planPatch(deferred, PatchHeaders(3, 5, None), None), Plan(False, 3, 0, 2, 5)
        )
        self.assertEqual(planPatch(deferred, PatchHeaders(3, None, None), None), Plan(False, 3, 0, None, None))
        self.assertRaises(BadRequest, planPatch, deferred, PatchHeaders(3, 2, None), 0)

    def test_declaredEnd(self) -> None:
        """A PATCH claims the largest of its end, the length it tells and the upload's length."""
        self.assertEqual(declaredEnd(PatchHeaders(3, None, None), 4, None), 7)
        self.assertEqual(declaredEnd(PatchHeaders(3, 2000, None), 30, None), 2000)
        self.assertEqual(declaredEnd(PatchHeaders(3, None, None), None, 10), 10)
        self.assertEqual(declaredEnd(PatchHeaders(0, 5, None), None, None), 5)
        self.assertIsNone(declaredEnd(PatchHeaders(3, None, None), None, None))

    def test_retriesCompleted(self) -> None:
        """A PATCH retries the completing one when it ends at the size and tells no other length."""
        for patch, length in (
            (PatchHeaders(4, None, None), 4), (PatchHeaders(8, None, None), 0),
            (PatchHeaders(8, None, None), None), (PatchHeaders(0, 8, None), 8),
        ):
            self.assertTrue(retriesCompleted(8, patch, length), (patch, length))
        for patch, length in (
            (PatchHeaders(4, None, None), 3), (PatchHeaders(4, None, None), 5),
            (PatchHeaders(4, None, None), None), (PatchHeaders(0, 9, None), 8),
            (PatchHeaders(9, None, None), 0),
        ):
            self.assertFalse(retriesCompleted(8, patch, length), (patch, length))

    def test_isFinal(self) -> None:
        """Only a stored final;... Upload-Concat makes a final upload."""
        self.assertTrue(isFinal("final;/.tus/" + ID))
        for concat in (None, "", "partial"):
            self.assertFalse(isFinal(concat))


class FuzzTests(SynchronousTestCase):
    @given(metadataPairs())
    def test_metadataRoundTrip(self, pair: tuple[bytes, list[tuple[str, bytes | None]]]) -> None:
        """Every well-formed Upload-Metadata parses to the pairs it says."""
        value, pairs = pair
        got = parseMetadata(value).pairs
        self.assertEqual([k for k, _ in got], [k for k, _ in pairs])
        for (_, mine), (_, theirs) in zip(got, pairs):
            self.assertEqual(mine or b"", theirs or b"")

    @given(hostileMetadata())
    def test_metadataHostile(self, value: bytes) -> None:
        """Every Upload-Metadata that breaks a rule is 400."""
        self.assertRaises(BadRequest, parseMetadata, value)

    @given(concatValues(prefix=b"/up"))
    def test_concatRoundTrip(self, pair: tuple[bytes, tuple[str, ...]]) -> None:
        """Every final; list of our URLs parses to its ids in order."""
        value, parts = pair
        self.assertEqual(parseConcat(value, b"/up"), Final(parts))

    @given(hostileConcat())
    def test_concatHostile(self, value: bytes) -> None:
        """Every Upload-Concat naming anything but our own uploads is 400."""
        self.assertRaises(BadRequest, parseConcat, value)

    @given(checksums())
    def test_checksumRoundTrip(self, triple: tuple[bytes, str, bytes]) -> None:
        """Every well-formed Upload-Checksum parses to its algorithm and digest."""
        value, alg, digest = triple
        self.assertEqual(parseChecksum(value), Checksum(alg, digest))

    @given(hostileChecksums())
    def test_checksumHostile(self, value: bytes) -> None:
        """Every Upload-Checksum with an unknown algorithm or a bad digest is 400."""
        self.assertRaises(BadRequest, parseChecksum, value)

    @settings(max_examples=300)
    @given(st.binary(max_size=200))
    def test_anyBytes(self, value: bytes) -> None:
        """No input makes a parser raise anything but a refusal."""
        for parse in (
            parseMetadata, parseConcat, parseChecksum, lambda v: parseNumber(v, "Upload-Offset"),
            parseTarget,
        ):
            try:
                parse(value)
            except UploadError:
                pass

    @given(st.integers(min_value=0, max_value=10**MAX_DIGITS - 1))
    def test_numberRoundTrip(self, n: int) -> None:
        """Every number of at most 19 digits reads back as itself (leading zeros too)."""
        self.assertEqual(parseNumber(b"%d" % n, "Upload-Length"), n)
        text = b"%d" % n
        padded = b"0" * (MAX_DIGITS - len(text)) + text
        self.assertEqual(parseNumber(padded, "Upload-Length"), n)
