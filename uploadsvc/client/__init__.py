"""
The resuming upload client (issue 3), on treq.

    from uploadsvc.client import Uploader, UploadJob, makeHTTPClient

    connection = makeHTTPClient(reactor, caFile=None)
    uploader = Uploader(connection.http, reactor, Cooperator(...))
    result = await uploader.upload(UploadJob("a.bin", "https://host/a.bin"))

Modules: L{uploader} (the resume loop), L{backoff} (the pure retry
schedule), L{producer} (file-range bodies and the running digest),
L{errors} (retry or stop), L{http} (treq client, token, credentials in the
URL), L{tls} (certificate and host name checks that fail closed), L{plan}
(files to URLs), L{progress} (tqdm display and summary), L{cli} (the
C{uploadsvc-upload} script).
"""

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import authorizationHeaders, makeHTTPClient
from uploadsvc.client.observer import IUploadObserver, NullObserver
from uploadsvc.client.plan import planUploads
from uploadsvc.client.uploader import Uploader, UploadJob, UploadResult

__all__ = [
    "IUploadObserver",
    "NullObserver",
    "RetryPolicy",
    "UploadJob",
    "UploadResult",
    "Uploader",
    "authorizationHeaders",
    "makeHTTPClient",
    "planUploads",
]
