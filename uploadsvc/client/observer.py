"""
What the uploader tells whoever watches it (a progress display, a test).
"""

from __future__ import annotations

from zope.interface import Interface, implementer

from uploadsvc.client.jobs import UploadJob, UploadResult


class IUploadObserver(Interface):
    """
    Receives the events of uploads, in the order they happen.
    """

    def started(job: UploadJob, size: int) -> None:
        """
        The upload of C{job}, C{size} bytes, began.
        """

    def progress(job: UploadJob, position: int) -> None:
        """
        Bytes up to C{position} of the file were sent (not yet necessarily
        stored); after a resume, C{position} may go back.
        """

    def retrying(job: UploadJob, reason: str, delay: float, failures: int) -> None:
        """
        An attempt failed for C{reason}; the next one starts in C{delay}
        seconds; C{failures} attempts in a row failed without progress.
        """

    def resumed(job: UploadJob, offset: int) -> None:
        """
        After a failure, the server holds C{offset} bytes and sending goes on
        from there.
        """

    def finished(result: UploadResult) -> None:
        """
        The upload ended, well or not.
        """


@implementer(IUploadObserver)
class NullObserver:
    """
    Ignores everything: quiet uploads.
    """

    def started(self, job: UploadJob, size: int) -> None:
        pass

    def progress(self, job: UploadJob, position: int) -> None:
        pass

    def retrying(self, job: UploadJob, reason: str, delay: float, failures: int) -> None:
        pass

    def resumed(self, job: UploadJob, offset: int) -> None:
        pass

    def finished(self, result: UploadResult) -> None:
        pass
