"""
The deployment files in tap-configs/ are runnable as written: the .tac starts
a real service under twistd -ny, the systemd unit's command line is valid, the
nginx config passes nginx -t, streams bodies and passes the raw URI.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase, TestCase

from uploadsvc.tap import Options
from tests.support.rawhttp import exchange
from tests.support.server import REPO_ROOT, TWISTD, freePort
from tests.support.tools import requireTool

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tap-configs")


def read(name: str) -> str:
    with open(os.path.join(CONFIGS, name), encoding="utf-8") as f:
        return f.read()


class SystemdUnitTests(SynchronousTestCase):
    def test_execStartParses(self) -> None:
        """The unit's ExecStart is a twistd uploadsvc command whose options parse."""
        line = next(
            l for l in read("uploadsvc.service").splitlines() if l.startswith("ExecStart=")
        )
        argv = shlex.split(line[len("ExecStart="):])
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertIn("--nodaemon", argv)
        args = argv[argv.index("uploadsvc") + 1 :]
        options = Options()
        options.parseOptions(args)
        self.assertEqual(options["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options["root"], "/srv/uploads")

    def test_writableOnlyWhereItStores(self) -> None:
        """The unit confines writes to the root it serves."""
        text = read("uploadsvc.service")
        self.assertIn("ProtectSystem=strict", text)
        self.assertIn("ReadWritePaths=/srv/uploads", text)


class NginxConfigTests(SynchronousTestCase):
    def test_streamsBodies(self) -> None:
        """Request buffering is off and the body size is left to uploadsvc."""
        text = read("nginx-uploadsvc.conf")
        self.assertIn("proxy_request_buffering off;", text)
        self.assertIn("client_max_body_size 0;", text)
        self.assertIn("proxy_http_version 1.1;", text)

    def test_rawURIPassedThrough(self) -> None:
        """proxy_pass names no URI, so nginx forwards the client's URI unchanged."""
        lines = [l.strip() for l in read("nginx-uploadsvc.conf").splitlines()]
        passes = [l for l in lines if l.startswith("proxy_pass ")]
        self.assertEqual(passes, ["proxy_pass http://uploadsvc;"])

    def test_syntaxAcceptedByNginx(self) -> None:
        """nginx -t accepts the config inside a minimal http block."""
        nginx = requireTool("nginx")
        tmp = os.path.abspath(self.mktemp())
        os.makedirs(tmp)
        cert = os.path.join(tmp, "c.pem")
        key = os.path.join(tmp, "k.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
             "-keyout", key, "-out", cert, "-days", "1"],
            check=True, capture_output=True,
        )
        site = read("nginx-uploadsvc.conf")
        site = site.replace("/etc/ssl/certs/uploads.example.org.pem", cert)
        site = site.replace("/etc/ssl/private/uploads.example.org.key", key)
        site = site.replace("listen 443 ssl;", "listen 127.0.0.1:18443 ssl;")
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
                "events {}\n"
                f"http {{ access_log off; client_body_temp_path {tmp}; {site} }}\n"
            )
        result = subprocess.run([nginx, "-t", "-c", conf, "-p", tmp], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)


def documentedTacCommand() -> list[str]:
    """
    The command that the .tac's docstring gives to run it, split.
    """
    lines = [l.strip() for l in read("uploadsvc.tac").splitlines() if " -ny " in l]
    if len(lines) != 1:
        raise AssertionError(f"expected one twistd -ny command in the .tac, found {lines}")
    return shlex.split(lines[0])


class TacTests(TestCase):
    """
    tap-configs/uploadsvc.tac runs as documented under twistd -ny.
    """

    timeout = 60

    def test_documentedCommand(self) -> None:
        """The .tac and the README give the same command, with the venv's twistd."""
        argv = documentedTacCommand()
        self.assertEqual(argv[0], ".venv/bin/twistd")
        self.assertEqual(argv[-1], "tap-configs/uploadsvc.tac")
        with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
            self.assertIn(" ".join(argv), f.read())

    def test_servesUploads(self) -> None:
        """
        The documented twistd -ny command serves the root and port given in
        the environment, and leaves no pid file in the folder it runs in.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        root = os.path.join(base, "root")
        port = freePort()
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["UPLOADSVC_ROOT"] = root
        env["UPLOADSVC_LISTEN"] = f"tcp:{port}:interface=127.0.0.1"
        env["UPLOADSVC_ARGS"] = "--no-fsync"
        log = open(os.path.join(base, "twistd.log"), "wb")
        self.addCleanup(log.close)
        argv = documentedTacCommand()
        # This interpreter's twistd for .venv/bin/twistd; the .tac by its
        # path in the repository, since the command runs from elsewhere.
        command = [*TWISTD, *argv[1:-1], os.path.join(REPO_ROOT, argv[-1])]
        process = subprocess.Popen(
            command, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

        self.addCleanup(stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        body = b"from the tac\n"
        _, answer = exchange(port, "PUT", "/tac/t.txt", [("Content-Length", str(len(body)))], body, timeout=20)
        self.assertEqual(answer.status, 201, answer.raw)
        with open(os.path.join(root, "tac", "t.txt"), "rb") as f:
            self.assertEqual(f.read(), body)
        self.assertEqual(sorted(os.listdir(base)), ["root", "twistd.log"])
        stop()
        self.assertEqual(sorted(os.listdir(base)), ["root", "twistd.log"])
