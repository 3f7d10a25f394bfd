"""
C{Content-Digest} (RFC 9530) of one request's body, checked without holding
the body (docs/protocol.md section 4).

The digest covers the whole body as sent, including the leading bytes that
an overlapping retry repeats (which are not written). Those come first and
are hashed as they pass, on the reactor thread; every later byte is hashed
on the sink's digest lane, beside the disk writes, in order. When the body
is complete the digests are compared; on a mismatch the app truncates the
staged file back to where this request started.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.python.failure import Failure
from zope.interface import implementer

from uploadsvc.errors import BadRequest, UploadError
from uploadsvc.protocol.digests import DigestSet, Hasher, newHasher
from uploadsvc.web.interfaces import IBodyReceiver


class ContentDigester:
    """
    The running digests of one request body and the values it must match.
    """

    def __init__(
        self,
        expected: DigestSet,
        factory: Callable[[str], Hasher] = newHasher,
        mismatch: Callable[[str], UploadError] | None = None,
    ) -> None:
        """
        @param factory: makes a hasher for an algorithm of C{expected}
            (tus C{Upload-Checksum} names sha1 and md5 too).
        @param mismatch: the refusal for an algorithm whose digest differs
            (tus: C{460}); C{400} C{content-digest-mismatch} by default.
        """
        self.expected = expected
        self.hashers: dict[str, Hasher] = {alg: factory(alg) for alg, _ in expected.values}
        self._mismatch = mismatch if mismatch is not None else _contentDigestMismatch

    def hashChunks(self, chunks: Sequence[bytes | memoryview]) -> None:
        """
        Feed body bytes, in order (blocking: called on the digest lane).
        """
        for hasher in self.hashers.values():
            for chunk in chunks:
                hasher.update(chunk)  # type: ignore[arg-type]

    def receiving(self, receiver: IBodyReceiver, skip: int) -> IBodyReceiver:
        """
        Wrap the body's C{receiver} so that the first C{skip} bytes, which it
        drops without writing, are hashed on their way.
        """
        return _SkippedBytesDigester(self, receiver, skip)

    def check(self) -> None:
        """
        @raise BadRequest: C{content-digest-mismatch} when any digest differs.
        """
        for alg, value in self.expected.values:
            if self.hashers[alg].digest() != value:
                raise self._mismatch(alg)


def _contentDigestMismatch(alg: str) -> UploadError:
    return BadRequest(
        "content-digest-mismatch",
        f"the body's {alg} digest does not match Content-Digest; nothing was appended",
    )


@implementer(IBodyReceiver)
class _SkippedBytesDigester:
    def __init__(self, digester: ContentDigester, inner: IBodyReceiver, skip: int) -> None:
        self._digester = digester
        self._inner = inner
        self._skip = skip

    def makeConnection(self, producer: Any) -> None:
        self._inner.makeConnection(producer)

    def dataReceived(self, data: bytes) -> None:
        if self._skip:
            head = memoryview(data)[: self._skip]
            self._digester.hashChunks([head])
            self._skip -= len(head)
        self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self._inner.connectionLost(reason)
