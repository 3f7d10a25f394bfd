"""
uploadsvc: a Twisted daemon that streams many uploads to disk at once, with
flow control, and lets an interrupted upload resume where it stopped.

Where things live:
  - L{uploadsvc.protocol}: the pure core (paths, Content-Range, digests, offset
    decisions); no reactor, no files.
  - L{uploadsvc.web}: the streaming glue into twisted.web and the Klein app.
  - L{uploadsvc.storage}: the storage contract and its stores (disk, memory).
  - L{uploadsvc.sink}: the flow-controlled file sink.
  - L{uploadsvc.tap}: the twistd service.
  - L{uploadsvc.client}: the resuming treq client.
  - L{uploadsvc.testing}: for users' own tests (fault proxy, disk runners, strategies).
"""
