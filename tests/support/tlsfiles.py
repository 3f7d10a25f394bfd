"""
A test's folder for the client against a real TLS server: a CA, a file to
upload, and C{twistd uploadsvc --listen ssl:...} with a given key and
certificate.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from tests.support.pki import TemporaryCA
from tests.support.server import ServerProcess, startServer
from tests.test_e2e_client import writeRandomFile


class TLSFilesMixin:
    """
    Mixed into a trial C{TestCase}: L{setUpFiles} from its C{setUp}.

    @ivar ca: the test's CA; C{caFile} its certificate in PEM.
    @ivar source: the file to upload.
    """

    base: str
    ca: TemporaryCA
    caFile: str
    source: str

    def setUpFiles(self, sourceSize: int) -> None:
        t: Any = self
        self.base = os.path.abspath(t.mktemp())
        os.makedirs(self.base)
        t.addCleanup(shutil.rmtree, self.base, True)
        self.ca = TemporaryCA()
        self.caFile = self.write("ca.pem", self.ca.certPem)
        self.source = os.path.join(self.base, "photo.jpg")
        writeRandomFile(self.source, sourceSize, 5)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def serveTLS(self, key: bytes, cert: bytes) -> ServerProcess:
        """
        Start the real server on 127.0.0.1 with this key and certificate.
        """
        keyFile = self.write("server.key", key)
        certFile = self.write("server.crt", cert)
        return startServer(
            self,
            os.path.join(self.base, "root"),
            "--no-fsync",
            listen=f"ssl:{{port}}:privateKey={keyFile}:certKey={certFile}:interface={{host}}",
        )
