"""
What users of uploadsvc may import for their own tests; it ships with the
package and keeps its names across releases like the rest of the public API.

  - L{uploadsvc.testing.faultproxy}: a TCP proxy that injects network faults
    (cuts, stalls, slow links) between a client and a server, also runnable
    as C{python -m uploadsvc.testing.faultproxy}.
  - L{uploadsvc.testing.runners}: fake disk runners (run at once, or complete
    by hand to hold writes in flight).
  - L{uploadsvc.testing.strategies}: hypothesis strategies for paths,
    Content-Range fields and digest fields.
  - L{uploadsvc.testing.tusstrategies}: hypothesis strategies for tus 1.0
    header fields (Upload-Metadata, Upload-Concat, Upload-Checksum, ...).
  - L{uploadsvc.testing.forwardedstrategies}: hypothesis strategies for
    C{Forwarded} / C{X-Forwarded-*} fields from a trusted proxy.

This project's own harness (a real C{twistd} child, the blocking raw HTTP
client, polling, crash staging) lives in C{tests/support/} and is not
shipped: it is free to change with the tests.
"""
