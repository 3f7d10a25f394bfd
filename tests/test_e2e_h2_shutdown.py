"""
SIGTERM with an HTTP/2 connection open, end to end against a real C{twistd
uploadsvc} over TLS: the drain closes the connection with a GOAWAY
(C{NO_ERROR}) naming the last stream served, not with a bare close.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.trial.unittest import TestCase
from twisted.web.http import H2_ENABLED

from tests.test_e2e_tls import BlockingH2Client, TLSServerMixin

if H2_ENABLED:
    import h2.events
    from h2.errors import ErrorCodes


class HTTP2ShutdownTests(TLSServerMixin, TestCase):
    timeout = 120

    if not H2_ENABLED:
        skip = "the h2 package is not installed"

    def test_goAwayOnDrain(self) -> None:
        """An idle HTTP/2 connection gets GOAWAY(NO_ERROR, last stream) when the server stops."""
        self.startTLSServer()
        client = BlockingH2Client(self.server.port, self.pki.caPath)
        self.addCleanup(client.sock.close)
        self.assertEqual(client.alpn, "h2")
        sid = client.start("HEAD", "/nothing.bin", end=True)
        self.assertTrue(client.wait(sid).ended)
        os.kill(self.server.pid, signal.SIGTERM)
        terminated = []
        deadline = time.monotonic() + 60
        while not terminated and time.monotonic() < deadline:
            data = client.sock.recv(65536)
            if not data:
                break
            terminated = [
                e for e in client.conn.receive_data(data)
                if isinstance(e, h2.events.ConnectionTerminated)
            ]
        self.assertEqual(len(terminated), 1, "the connection closed without a GOAWAY")
        self.assertEqual(terminated[0].error_code, ErrorCodes.NO_ERROR)
        self.assertEqual(terminated[0].last_stream_id, sid)
        self.assertEqual(self.server.terminate(), 0)
