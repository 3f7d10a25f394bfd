"""
The storage contract: what the web layer (and later tus, the resumable-upload
draft and the operations commands) may ask of a store.

As in tusd's C{DataStore}, a small core (L{IUploadStore}) and a capability
of its own (L{ITakeover}: writers in other processes asking a holder to let
go). Every store passes one conformance suite
(C{tests/test_store_conformance.py}). An upload is named either by its
destination (an L{UploadPath}) or by a server-assigned L{UploadId} whose
destination was decided when L{IUploadStore.create} made it. The methods
block (a file store touches the disk): the web layer runs them in its disk
pool.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import attrs
from zope.interface import Attribute, Interface

from uploadsvc.errors import NotFound
from uploadsvc.protocol.decisions import AlreadyComplete, Plan, Stored
from uploadsvc.protocol.paths import UploadPath

_ID = re.compile(r"[0-9a-f]{32}")


@attrs.frozen
class UploadId:
    """
    A server-assigned upload id: 32 lowercase hex digits (128 random bits),
    safe in a URL and in a file name.
    """

    value: str = attrs.field()

    @value.validator
    def _check(self, attribute: object, value: str) -> None:
        if not isinstance(value, str) or _ID.fullmatch(value) is None:
            raise ValueError(f"not an upload id: {value!r}")


def newUploadId() -> UploadId:
    """
    A new random upload id (128 bits from the system's CSPRNG).
    """
    return UploadId(secrets.token_hex(16))


def parseUploadId(text: str) -> UploadId:
    """
    The id a client names (in a URL); anything of another shape names no
    upload.

    @raise NotFound: C{no-upload}, for any text that is not an upload id.
    """
    try:
        return UploadId(text)
    except ValueError:
        raise NotFound("no-upload", "there is no such upload") from None


#: What names an upload: its destination, or its server-assigned id.
Target = Union[UploadPath, UploadId]

#: The keys L{uploadKey} makes: a path's, or an upload id's.
KEY = re.compile(r"p-[0-9a-f]{64}|i-[0-9a-f]{32}")


def uploadKey(target: Target) -> str:
    """
    The name of the upload of C{target} in a store, its locks and takeover
    markers: C{p-<sha-256 of the path>}, or C{i-<id>}.
    """
    if isinstance(target, UploadId):
        return "i-" + target.value
    return "p-" + hashlib.sha256(target.relative.encode("utf-8")).hexdigest()


@attrs.frozen
class Incomplete:
    """
    One incomplete upload, as L{IUploadStore.listIncomplete} sees it.

    @ivar key: the store's name for it (what L{IUploadStore.expire} takes).
    @ivar path: its destination (relative), when its metadata tells.
    @ivar uploadId: its server-assigned id, for uploads made by C{create}.
    @ivar offset: bytes staged.
    @ivar total: its recorded length, when known.
    @ivar touched: when it last received a byte, or was made or started
        over (seconds since the epoch, on the store's clock): what expiry
        measures from. A status query, even one that records a total or
        digests, does not count, so querying never keeps an abandoned
        upload alive.
    @ivar attributes: what its front end recorded at creation (tus keeps
        its metadata and concatenation there).
    @ivar partial: a part of a later concatenation: it lands nowhere.
    """

    key: str
    path: str | None
    uploadId: UploadId | None
    offset: int
    total: int | None
    touched: float
    attributes: dict[str, str] = attrs.field(factory=dict)
    partial: bool = False


#: Where an upload created without a destination lands (docs/protocol.md
#: sections 8 and 9): C{incoming/<id>}.
INCOMING = "incoming"


class IStagedUpload(Interface):
    """
    An incomplete upload opened for writing by one request, holding its
    writer lock until L{close}.
    """

    key = Attribute("The store's name for the upload (L{IUploadStore.keyFor}).")
    path = Attribute("Its destination, an L{UploadPath}.")
    offset = Attribute("Where the next byte goes: the staged size.")
    hasher = Attribute(
        "sha-256 of bytes 0..offset, or None when this process did not see"
        " them all (then completion re-reads them)."
    )
    info = Attribute("The metadata L{sync} records (total, digests, generation).")
    closed = Attribute("Whether L{close} ran.")
    digests = Attribute(
        "The whole upload's digests (algorithm to raw digest, sha-256 among"
        " them) once L{IUploadStore.complete} checked them; None before."
    )

    def writeChunks(chunks: Sequence[bytes | memoryview]) -> None:
        """
        Append C{chunks} at L{offset} and move it on.
        """

    def hashChunks(chunks: Sequence[bytes | memoryview]) -> None:
        """
        Feed C{chunks} to L{hasher} (in order, beside the writes).
        """

    def sync() -> int:
        """
        Make the bytes and metadata durable; return the durable offset.
        """

    def syncAndClose() -> int:
        """
        L{sync}, then L{close}: the end of a request that did not complete.
        """

    def close() -> None:
        """
        Let go of the upload (idempotent).
        """


class ICompleteFile(Interface):
    """
    A complete file opened for reading (a download): what was opened stays
    readable whole even if the path is replaced or removed meanwhile.
    """

    size = Attribute("Its size in bytes, when it was opened.")
    modified = Attribute("Its modification time, in whole seconds since the epoch.")
    version = Attribute(
        "Text that changes whenever the file at the path is replaced or"
        " rewritten (what its ETag is made of)."
    )

    def read(offset: int, length: int) -> bytes:
        """
        Up to C{length} bytes from C{offset} (fewer only at its end).
        """

    def close() -> None:
        """
        Let go of it (idempotent).
        """


class IUploadStore(Interface):
    """
    Staged uploads and complete files. One writer per upload: L{begin}
    locks it until the staged upload is closed, completed or discarded.
    Status queries (L{inspect}, L{record}) never wait for a writer.

    A C{staged} argument is an L{IStagedUpload} that this very store opened
    (each store reads its own kind).
    """

    def keyFor(target: Target) -> str:
        """
        The store's name for the upload of C{target} (an L{UploadPath} or
        an L{UploadId}): what writers, takeover markers and hash states are
        keyed by.
        """

    def create(
        path: UploadPath | None,
        total: int | None = None,
        attributes: Mapping[str, str] | None = None,
        partial: bool = False,
        uploadId: UploadId | None = None,
    ) -> UploadId:
        """
        Make an empty upload for the destination C{path}, durably, and
        return its new L{UploadId}. It is found by that id until it
        completes, is cancelled or expires (then L{NotFound}).

        @param path: L{None}: C{incoming/<id>} (L{INCOMING}).
        @param total: its length, when known at creation.
        @param attributes: text the front end keeps with it (L{describe}).
        @param partial: a part of a later concatenation: never moved into
            place, not even by L{recover}.
        @param uploadId: the id to give it, made beforehand with
            L{newUploadId} (so that a pre-create hook is told it); L{None}:
            a new one.
        """

    def describe(target: UploadId) -> Incomplete:
        """
        One upload made by L{create}, as L{listIncomplete} lists it (with
        when it was last touched, for expiry's answers, and its
        attributes); not fsync'd (L{inspect} gives the durable offset).

        @raise NotFound: an id that names no upload.
        """

    def concatenate(final: UploadId, parts: Sequence[UploadId]) -> int:
        """
        Fill the upload C{final} with the bytes of the complete partial
        uploads C{parts}, in order, durably, and record its total (which it
        returns); C{final} is then fully staged, to be completed as any
        upload. The parts are left as they are.

        @raise BadRequest: C{bad-concat}, a part that is not a partial
            upload or not complete.
        @raise NotFound: an id that names no upload.
        @raise Busy: someone writes C{final} or a part.
        """

    def inspect(target: Target, durable: bool = True, strict: bool = False) -> Stored:
        """
        What is stored for C{target}, a L{Stored}: the offset, total and
        digests of its incomplete upload, and the size of a complete file
        at its destination.

        @raise NotFound: an L{UploadId} that names no upload.
        """

    def begin(
        target: Target,
        decide: Callable[[Stored], Plan | AlreadyComplete],
        digests: dict[str, str],
        hashState: tuple[str, int, Any] | None,
    ) -> tuple[Stored, Plan | AlreadyComplete, Any]:
        """
        Lock the upload, decide the request against what is stored now
        (under the lock) and open the staged upload as the plan says (from
        the start when it says start over). Never waits for the lock: a
        writer that wants a held upload asks for it (L{ITakeover}) and
        tries again later, on the reactor's clock, not in a pool thread.

        @param decide: C{Stored -> Plan | AlreadyComplete}; may raise the
            refusal.
        @param digests: C{Repr-Digest}s to remember (alg to base64).
        @param hashState: C{(generation, offset, hasher)} remembered from an
            earlier request, used when it still covers the bytes.
        @return: C{(stored, plan, staged)}; C{staged} is L{None} for
            L{AlreadyComplete}.
        @raise Busy: C{locked}, someone else holds the upload (refused at
            once).
        """

    def record(
        target: Target,
        total: int | None,
        digests: dict[str, str],
        decide: Callable[[Stored], Stored] | None = None,
    ) -> Stored:
        """
        Decide a status query against what is stored and remember the total
        or digests it carried (latest wins); waits for no writer.
        """

    def rollback(staged: Any, offset: int) -> None:
        """
        Cut the staged bytes back to C{offset} (a failed C{Content-Digest}).
        """

    def complete(
        target: Target,
        staged: Any,
        allowOverwrite: bool,
        expected: dict[str, bytes] | None = None,
        streamed: dict[str, bytes] | None = None,
    ) -> bool:
        """
        Check the whole upload's digests, then move it into place atomically
        and durably; C{staged} is closed afterwards whatever happens.

        @param expected: alg to raw digest; a mismatch discards the upload
            and raises L{BadRequest} C{digest-mismatch}. (L{None}: checked
            by the caller.) Once checked, C{staged.digests} holds every
            digest computed, sha-256 among them (the answer's).
        @param streamed: digests of the whole upload that the caller
            computed while it streamed, used as they are.
        @return: whether it replaced an existing file.
        @raise Conflict: a file is at the destination and overwrite is off.
        """

    def discard(staged: Any) -> None:
        """
        Throw away an upload being written, and close it.
        """

    def cancel(target: Target) -> bool:
        """
        Discard the incomplete upload of C{target}; whether there was one.
        Never waits, as L{begin}.

        @raise Busy: C{locked}, another writer holds it.
        """

    def listIncomplete() -> list[Incomplete]:
        """
        Every incomplete upload, as L{Incomplete}s (for expiry).
        """

    def expire(key: str, idleSeconds: float, now: float | None = None) -> bool:
        """
        Discard the incomplete upload C{key} if it received no byte for
        C{idleSeconds} (see L{Incomplete.touched}) and no writer holds it;
        whether it did. Of several callers at once (in any process sharing
        the store), at most one is told C{True} for one upload.

        @param now: the time to measure from (default: the store's clock).
        """

    def touchedAt(target: Target) -> float | None:
        """
        When the incomplete upload of C{target} last received a byte, or
        was made or started over (as L{Incomplete.touched}): what the time
        left before its expiry is measured from
        (L{uploadsvc.protocol.expiry.secondsLeft}). L{None} when nothing is
        staged for it.

        @raise NotFound: an L{UploadId} that names no upload.
        """

    def hashStaged(staged: Any, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the staged bytes (alg to raw digest).
        """

    def hashComplete(path: UploadPath, algorithms: Iterable[str]) -> dict[str, bytes]:
        """
        Digest the complete file at C{path}.

        @raise FileNotFoundError: there is none.
        """

    def openComplete(path: UploadPath) -> ICompleteFile:
        """
        Open the complete file at C{path} for reading, reached with the
        same care as L{hashComplete} (no link followed on the way or at
        the end); the caller closes it.

        @raise FileNotFoundError: there is none (an incomplete upload is
            not one).
        @raise Conflict: the entry there is a folder, a link or not a
            regular file.
        @raise Forbidden: the path crosses a symbolic link or mount point.
        """

    def deleteComplete(path: UploadPath) -> bool:
        """
        Remove the complete file at C{path}; whether there was one.
        """

    def freeBytes() -> int:
        """
        Room left for staged bytes.
        """

    def recover(allowOverwrite: bool) -> list[tuple[str, str]]:
        """
        Finish uploads fully staged but never moved into place (at start).

        @return: C{(path, what happened)} for each it acted on.
        """

    def close() -> None:
        """
        Let go of what the store holds open.
        """


class ITakeover(Interface):
    """
    Newest writer wins across processes: a writer that finds an upload held
    elsewhere leaves a request, and the holder's process ends its writer.
    """

    def askTakeover(key: str) -> None:
        """
        Ask whoever holds the upload C{key} to let go (a waiter asks again
        at each of its tries).
        """

    def dropTakeover(key: str) -> None:
        """
        Take that request back (the asker gave up); getting the upload in
        L{IUploadStore.begin} takes it back too.
        """

    def pendingTakeovers() -> list[str]:
        """
        Keys of uploads someone asked the holder to let go of.
        """

    def holdsCurrentLock(staged: Any) -> bool:
        """
        Whether C{staged}'s lock still keeps other writers out.
        """
