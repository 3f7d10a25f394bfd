"""
The resuming upload client (issue 3), on treq.

    from uploadsvc.client import Uploader, UploadJob, makeHTTPClient

    connection = makeHTTPClient(reactor, caFile=None)
    uploader = Uploader(connection.http, reactor, Cooperator(...))
    result = await uploader.upload(UploadJob("a.bin", "https://host/a.bin"))

Modules, the pure ones first:
  - L{jobs}: the value types, L{UploadJob} and L{UploadResult};
  - L{decisions}: sans IO, the next range to send and what an answer means;
  - L{backoff}: the retry schedule;
  - L{plan}: local files to URLs;
  - L{errors}: retry or stop, and Twisted's failures sorted into the two;
  - L{exchange}: the HTTP plumbing, one request and its answer read whole,
    with the stall watchdog;
  - L{http}: the treq client, the token, credentials in the URL;
  - L{tls}: certificate and host name checks that fail closed;
  - L{producer}: file-range bodies and the running digest;
  - L{fileupload}: one file's upload and the resume loop, which each
    protocol's loop extends: L{putupload} (the path protocol), L{tusupload}
    and L{ietfupload};
  - L{uploader}: picks each file's loop by protocol, runs them in parallel;
  - L{created}: sans IO, the answers tus and the draft read alike;
  - L{tus}, L{tusupload}: the same over tus 1.0 (C{--protocol tus});
  - L{ietf}, L{ietfupload}: the same over the IETF resumable-upload draft
    (C{--protocol ietf});
  - L{observer}, L{progress}: events, the tqdm display and the summary;
  - L{cli}: the C{uploadsvc-upload} script;
  - L{testing}: a scripted in-memory server and a step-by-step clock for
    tests of code that uses the client.
"""

from uploadsvc.client.backoff import RetryPolicy
from uploadsvc.client.http import authorizationHeaders, makeHTTPClient
from uploadsvc.client.observer import IUploadObserver, NullObserver
from uploadsvc.client.plan import planUploads
from uploadsvc.client.jobs import UploadJob, UploadResult
from uploadsvc.client.uploader import Uploader, UploadSettings

__all__ = [
    "IUploadObserver",
    "NullObserver",
    "RetryPolicy",
    "UploadJob",
    "UploadResult",
    "UploadSettings",
    "Uploader",
    "authorizationHeaders",
    "makeHTTPClient",
    "planUploads",
]
