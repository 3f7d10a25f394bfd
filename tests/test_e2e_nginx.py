"""
tap-configs/ ships one deployment: the systemd unit's uploadsvc behind the
nginx config. Here a real nginx runs that config on a loopback port in front
of a real twistd started with the unit's own ExecStart arguments, and uploads,
resumes and refusals go through it.

What the test changes in the shipped files, and nothing else:
 - the unit: the twistd executable (this interpreter's twistd), the value of
   C{--root} (a temporary folder) and the port of C{--listen} (a free one);
 - the nginx config: C{listen 443 ssl} becomes a free loopback port, the
   certificate and key are a self-signed pair for C{127.0.0.1} made here, the
   htpasswd file is one made here, and the upstream's port is the unit's
   replaced port. It is included in a minimal C{nginx.conf} of the test's
   (C{daemon off}, C{master_process off}, logs and temp files in the test's
   folder), as the config's own comment says to include it from C{http{}}.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shlex
import socket
import ssl
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support.rawhttp import patternBytes
from tests.support.programs import startProgram
from tests.support.server import TWISTD, ServerProcess, freePort
from tests.support.tools import requireTool

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tap-configs")

USER = "alice"
PASSWORD = "correct horse battery"

#: Seconds any one network step may take before the test fails (not a
#: performance bound: a generous ceiling so that nothing hangs).
STEP = 30.0


def read(name: str) -> str:
    with open(os.path.join(CONFIGS, name), encoding="utf-8") as f:
        return f.read()


def unitArguments() -> list[str]:
    """
    The systemd unit's ExecStart, split as systemd splits it.
    """
    lines = [l for l in read("uploadsvc.service").splitlines() if l.startswith("ExecStart=")]
    if len(lines) != 1:
        raise AssertionError(f"expected one ExecStart= line, found {len(lines)}")
    return shlex.split(lines[0][len("ExecStart="):])


def optionValue(argv: list[str], name: str) -> str:
    """
    The value of the one C{name VALUE} (or C{name=VALUE}) option in C{argv}.
    """
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    values += [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    if len(values) != 1:
        raise AssertionError(f"expected one {name} in {argv}, found {values}")
    return values[0]


def replaceOnce(text: str, old: str, new: str) -> str:
    """
    C{text} with its one occurrence of C{old} replaced, so that a change to
    the shipped file fails here instead of silently testing something else.
    """
    if text.count(old) != 1:
        raise AssertionError(f"expected {old!r} once in the shipped config, found {text.count(old)}")
    return text.replace(old, new)


def unitCommand(root: str, port: int) -> list[str]:
    """
    The unit's ExecStart with this interpreter's twistd, C{root} and C{port}.
    """
    argv = unitArguments()
    assert argv[0].endswith("/twistd"), argv[0]
    args = argv[1:]
    listen = optionValue(args, "--listen")
    kind, oldPort, rest = listen.split(":", 2)
    assert kind == "tcp" and oldPort.isdigit(), listen
    out = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--root":
            arg = root
        elif i > 0 and args[i - 1] == "--listen":
            arg = f"tcp:{port}:{rest}"
        out.append(arg)
    return [*TWISTD, *out]


def htpasswdLine(user: str, password: str) -> str:
    """
    One htpasswd line in the salted SHA-1 scheme nginx reads (C{{SSHA}}).
    """
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return f"{user}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class ShippedDeploymentTests(SynchronousTestCase):
    """
    The unit and the nginx config name the same upstream, prefix and
    authentication, read from the files as shipped.
    """

    def test_upstreamIsTheUnitsListener(self) -> None:
        """nginx's upstream is the address the unit's uploadsvc listens on."""
        listen = optionValue(unitArguments(), "--listen")
        kind, port, rest = listen.split(":", 2)
        self.assertEqual(kind, "tcp")
        self.assertIn("interface=127.0.0.1", rest.split(":"))
        self.assertIn(f"server 127.0.0.1:{port};", read("nginx-uploadsvc.conf"))

    def test_prefixIsTheLocation(self) -> None:
        """The unit strips the prefix that nginx's location passes unchanged."""
        prefix = optionValue(unitArguments(), "--prefix")
        lines = [l.strip() for l in read("nginx-uploadsvc.conf").splitlines()]
        self.assertEqual(
            [l for l in lines if l.startswith("location ")], [f"location {prefix}/ {{"]
        )
        self.assertEqual([l for l in lines if l.startswith("proxy_pass ")], ["proxy_pass http://uploadsvc;"])

    def test_frontEndAuthenticates(self) -> None:
        """The unit trusts the front end, and the front end asks for credentials."""
        self.assertIn("--trust-front-end", unitArguments())
        self.assertIn('auth_basic "uploads";', read("nginx-uploadsvc.conf"))


class NginxInFrontTests(SynchronousTestCase):
    """
    A real nginx with the shipped config in front of the unit's twistd.
    """

    def setUp(self) -> None:
        nginx = requireTool("nginx")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.root = os.path.join(base, "root")
        self.server = ServerProcess(
            self.root, command=lambda server: unitCommand(server.root, server.port)
        )
        self.server.start()
        self.addCleanup(self.server.stop)
        self.port = freePort()
        self.cafile = self._startNginx(nginx, os.path.join(base, "nginx"), self.server.port)

    def _startNginx(self, nginx: str, tmp: str, upstreamPort: int) -> str:
        """
        Run nginx with the shipped config (templated as the module docstring
        says) until the test's cleanup; return the certificate clients trust.
        """
        os.makedirs(tmp)
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", key, "-out", cert, "-days", "1"],
            check=True, capture_output=True, timeout=STEP,
        )
        passwords = os.path.join(tmp, "htpasswd")
        with open(passwords, "w") as f:
            f.write(htpasswdLine(USER, PASSWORD))
        site = read("nginx-uploadsvc.conf")
        site = replaceOnce(site, "listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;")
        site = replaceOnce(site, "/etc/ssl/certs/uploads.example.org.pem", cert)
        site = replaceOnce(site, "/etc/ssl/private/uploads.example.org.key", key)
        site = replaceOnce(
            site, "auth_basic_user_file /etc/nginx/uploadsvc.htpasswd;",
            f"auth_basic_user_file {passwords};",
        )
        site = replaceOnce(site, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstreamPort};")
        temps = "".join(
            f"{kind}_temp_path {tmp}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                f"daemon off;\nmaster_process off;\npid {tmp}/nginx.pid;\n"
                f"error_log {tmp}/error.log info;\n"
                "events { worker_connections 64; }\n"
                f"http {{\naccess_log {tmp}/access.log;\n{temps}{site}\n}}\n"
            )
        self.errorLog = os.path.join(tmp, "error.log")
        startProgram(self, [nginx, "-p", tmp, "-c", conf, "-e", self.errorLog], self.port, self._errors, STEP)
        return cert

    def _errors(self) -> str:
        try:
            with open(self.errorLog) as f:
                return f.read()[-4000:]
        except OSError as e:
            return str(e)

    def connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=self.cafile)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=STEP, context=context)
        self.addCleanup(conn.close)
        return conn

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
        auth: str | None = basic(USER, PASSWORD), chunked: bool = False,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """
        One request to nginx on a new connection; the answer and its body.
        """
        fields = dict(headers or {})
        if auth is not None:
            fields["Authorization"] = auth
        conn = self.connection()
        conn.request(method, path, body=body, headers=fields, encode_chunked=chunked)  # type: ignore[arg-type]
        response = conn.getresponse()
        return response, response.read()

    def stored(self, relpath: str) -> bytes:
        with open(os.path.join(self.root, relpath), "rb") as f:
            return f.read()

    def test_uploadLandsUnderTheRoot(self) -> None:
        """PUT /upload/a/b through nginx stores <root>/a/b, not <root>/upload/a/b."""
        body = patternBytes(1, 0, 70000)
        response, answer = self.request(
            "PUT", "/upload/photos/2026/a.jpg", body, {"Content-Length": str(len(body))}
        )
        self.assertEqual(response.status, 201, answer)
        self.assertEqual(
            json.loads(answer),
            {"path": "photos/2026/a.jpg", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        )
        self.assertEqual(self.stored("photos/2026/a.jpg"), body)
        self.assertFalse(os.path.exists(os.path.join(self.root, "upload")))
        response, _ = self.request("HEAD", "/upload/photos/2026/a.jpg")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Upload-Complete"), "?1")

    def test_locationIsPublic(self) -> None:
        """
        Location is nginx's public https URL (the unit trusts nginx's
        X-Forwarded-Proto and -Host); what a client sends in Forwarded or
        X-Forwarded-* itself changes nothing.
        """
        body = b"where am I\n"
        response, answer = self.request(
            "PUT", "/upload/u/where.txt", body,
            {"Content-Length": str(len(body)), "Forwarded": "proto=http;host=evil.example",
             "X-Forwarded-Prefix": "/evil", "X-Forwarded-Host": "evil.example"},
        )
        self.assertEqual(response.status, 201, answer)
        self.assertEqual(
            response.getheader("Location"), f"https://127.0.0.1:{self.port}/upload/u/where.txt"
        )

    def test_refusedWithoutCredentials(self) -> None:
        """nginx answers 401 without credentials or with a wrong password, and nothing reaches the root."""
        body = b"not allowed\n"
        for auth in (None, basic(USER, "wrong"), basic("mallory", PASSWORD)):
            response, _ = self.request(
                "PUT", "/upload/x/y.txt", body, {"Content-Length": str(len(body))}, auth=auth
            )
            self.assertEqual(response.status, 401, auth)
            self.assertIn("Basic", response.getheader("WWW-Authenticate") or "")
        response, _ = self.request("HEAD", "/upload/x/y.txt", auth=None)
        self.assertEqual(response.status, 401)
        self.assertEqual(os.listdir(self.root), [".uploadsvc"])
        response, _ = self.request("HEAD", "/upload/x/y.txt")
        self.assertEqual(response.status, 404)

    def test_outsideTheLocation(self) -> None:
        """A path outside nginx's location never reaches uploadsvc (nginx's own static server refuses the PUT)."""
        response, _ = self.request("PUT", "/elsewhere/a.txt", b"x", {"Content-Length": "1"})
        self.assertIn(response.status, (404, 405))
        self.assertNotIn("Upload-Offset", response.headers)
        self.assertEqual(os.listdir(self.root), [".uploadsvc"])

    def test_resumeThroughNginx(self) -> None:
        """
        HEAD through nginx tells how much of an upload arrived, and after the
        client is cut off the README's resume recipe (a chunked Content-Range
        body) completes it.
        """
        total, cut = 300000, 120000
        data = patternBytes(2, 0, total)
        context = ssl.create_default_context(cafile=self.cafile)
        raw = context.wrap_socket(
            socket.create_connection(("127.0.0.1", self.port), timeout=STEP),
            server_hostname="127.0.0.1",
        )
        try:
            raw.sendall(
                b"PUT /upload/isos/big.iso HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: {basic(USER, PASSWORD)}\r\n".encode()
                + f"Content-Length: {total}\r\n\r\n".encode()
                + data[:cut]
            )
            deadline = time.monotonic() + STEP
            for _ in range(300):
                response, _ = self.request("HEAD", "/upload/isos/big.iso")
                if response.status == 204 and response.getheader("Upload-Offset") == str(cut):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            self.assertEqual(response.status, 204, self.server.logTail())
            self.assertEqual(response.getheader("Upload-Offset"), str(cut))
            self.assertEqual(response.getheader("Upload-Complete"), "?0")
            self.assertEqual(response.getheader("Upload-Length"), str(total))
            self.assertEqual(response.getheader("Range"), f"bytes=0-{cut - 1}")
        finally:
            raw.close()
        rest = data[cut:]
        response, answer = self.request(
            "PUT", "/upload/isos/big.iso",
            iter([rest[i:i + 65536] for i in range(0, len(rest), 65536)]),
            {"Content-Range": f"bytes {cut}-{total - 1}/{total}"}, chunked=True,
        )
        self.assertEqual(response.status, 201, answer)
        self.assertEqual(json.loads(answer)["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(self.stored("isos/big.iso"), data)
        self.assertFalse(os.path.exists(os.path.join(self.root, "upload")))
