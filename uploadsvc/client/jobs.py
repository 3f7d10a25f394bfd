"""
The client's value types: L{UploadJob} (one file to send, and where) and
L{UploadResult} (how its upload ended).

They live apart from the uploader so that the planner, the observers, the
display and users' own code can name them without importing the resume
loop (and without an import cycle between it and the observer interface).
Frozen attrs classes: no Twisted, no IO.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class UploadJob:
    """
    One file to upload.

    @ivar path: the local file.
    @ivar url: the destination URL (already percent-encoded); a
        C{user:password@} in it is sent as HTTP Basic, never in the URL.
    @ivar name: what to call it in messages (by default the path).
    """

    path: str
    url: str
    name: str = ""

    @property
    def label(self) -> str:
        """
        The name shown to users.
        """
        return self.name or self.path


@attrs.frozen
class UploadResult:
    """
    How one file's upload ended.

    @ivar ok: whether the file is at the server, complete and verified.
    @ivar size: the file size (-1 when it could not be read).
    @ivar error: why it failed, one line, or L{None}.
    @ivar sha256: the hex sha-256 of the file when known.
    @ivar requests: data-carrying requests sent.
    @ivar resumes: times the upload went on after a failed attempt.
    @ivar startOffsets: the first byte of every data-carrying request, in
        order: after the first, a C{0} would mean a restart from zero.
    @ivar bytesSent: body bytes handed to the network, resends included.
    @ivar elapsed: seconds from start to end.
    @ivar alreadyComplete: the server held the complete file before this
        upload sent any of it.
    """

    job: UploadJob
    ok: bool
    size: int
    error: str | None = None
    sha256: str | None = None
    requests: int = 0
    resumes: int = 0
    startOffsets: tuple[int, ...] = ()
    bytesSent: int = 0
    elapsed: float = 0.0
    alreadyComplete: bool = False
