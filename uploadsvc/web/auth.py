"""
Who may upload: bearer tokens from a file, HMAC-signed URLs, or a front end
that has already checked.

The decision is made from the request line and headers alone (the app asks
before it looks at the path, so a 401 comes before any 400, and before any
body byte is read). Secrets live in small files that the operator may edit
while the server runs: they are re-read when their modification time, size
or inode changes (checked at most once a second, with one C{stat}) and on
C{SIGHUP}.

A token line may limit its token to a folder and to some operations
(L{uploadsvc.protocol.scopes}); the check returns the matched
L{Credential}, whose scope the app checks once the path is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
from typing import Any, Callable, Generic, Sequence, TypeVar

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from uploadsvc.errors import Unauthorized
from uploadsvc.protocol.scopes import Credential, ScopeSyntaxError, parseTokenLines
from uploadsvc.protocol.signing import checkSignature, hasSignature

log = Logger()

#: Shortest token or signing key accepted; shorter lines are skipped.
MIN_SECRET_LENGTH = 16

#: Seconds between two looks at a secret file's modification time.
CHECK_INTERVAL = 1.0

CHALLENGE = b'Bearer realm="uploadsvc"'


class SecretFileError(Exception):
    """
    A secret file cannot be read, or holds no usable secret.
    """


class BadTokenLine(SecretFileError):
    """
    A token file holds a line that cannot be read (an unknown operation, a
    bad prefix, a name used twice): the operator's mistake, said in one line.
    """


def readSecrets(path: str) -> list[bytes]:
    """
    The secrets of a file: one per line, surrounding white space removed,
    blank lines and lines starting with C{#} skipped.

    @raise SecretFileError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror}") from e
    secrets = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line) < MIN_SECRET_LENGTH:
            _warnShort(path, number)
            continue
        secrets.append(line)
    return secrets


def _warnShort(path: str, number: int) -> None:
    log.warn(
        "{path} line {number}: shorter than {minimum} characters, ignored",
        path=path, number=number, minimum=MIN_SECRET_LENGTH,
    )


def readTokens(path: str) -> list[Credential]:
    """
    The credentials of a token file: a token per line, optionally followed
    by C{name=}, C{prefix=} and C{ops=} fields (L{uploadsvc.protocol.scopes});
    blank lines and C{#} comments skipped, too short tokens skipped with a
    warning.

    @raise SecretFileError: the file cannot be read.
    @raise BadTokenLine: a line cannot be read.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror}") from e
    try:
        found = parseTokenLines(lines)
    except ScopeSyntaxError as e:
        raise BadTokenLine(f"{path} {e}") from None
    credentials = []
    for number, credential in found:
        if len(credential.token) < MIN_SECRET_LENGTH:
            _warnShort(path, number)
            continue
        credentials.append(credential)
    return credentials


_Secret = TypeVar("_Secret")


class SecretFile(Generic[_Secret]):
    """
    The current secrets of a file that may change while the server runs.

    A file that becomes unreadable leaves no valid secret (fail closed) until
    it is readable again; one that holds a line that cannot be read
    (L{BadTokenLine}) keeps the secrets read before, and says so in one log
    line, until it is fixed.

    @ivar path: the file.
    @ivar secrets: the secrets read last.
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime,
        interval: float = CHECK_INTERVAL,
        read: Callable[[str], list[_Secret]] = readSecrets,  # type: ignore[assignment]
    ) -> None:
        """
        Read C{path} now.

        @param read: reads the file (L{readSecrets}, L{readTokens}).
        @raise SecretFileError: it cannot be read or holds no usable secret.
        """
        self.path = path
        self._read = read
        self._clock = clock
        self._interval = interval
        self._checked = clock.seconds()
        self._signature = self._stat()
        self.secrets: list[_Secret] = read(path)
        if not self.secrets:
            raise SecretFileError(
                f"{path} holds no secret of at least {MIN_SECRET_LENGTH} characters"
            )

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> None:
        """
        Read the file again now.
        """
        self._signature = self._stat()
        try:
            self.secrets = self._read(self.path)
        except BadTokenLine as e:
            log.error(
                "{error}; keeping the {count} tokens read before until it is fixed",
                error=e, count=len(self.secrets),
            )
        except SecretFileError as e:
            log.error("{error}; no secret of this file is valid until it is fixed", error=e)
            self.secrets = []
        else:
            log.info("read {count} secrets from {path}", count=len(self.secrets), path=self.path)

    def current(self) -> list[_Secret]:
        """
        The secrets, re-read first if the file changed since the last look
        (looked at no more than once per interval).
        """
        now = self._clock.seconds()
        if now - self._checked >= self._interval or now < self._checked:
            self._checked = now
            if self._stat() != self._signature:
                self.reload()
        return self.secrets


def tokenFile(path: str, clock: IReactorTime) -> SecretFile[Credential]:
    """
    The C{--auth-tokens} file, read now.

    @raise SecretFileError: it cannot be read, holds a bad line, or no token.
    """
    return SecretFile(path, clock, read=readTokens)


class Authenticator:
    """
    Decides whether a request may proceed, from its line and headers.

    A request passes with a valid C{Authorization: Bearer <token>} or a valid
    signed URL (L{uploadsvc.protocol.signing}); with neither source
    configured, every request passes (the trust-the-front-end mode, or an
    explicitly insecure server).
    """

    def __init__(
        self,
        clock: IReactorTime,
        tokens: SecretFile[Any] | None = None,
        signingKeys: SecretFile[bytes] | None = None,
    ) -> None:
        """
        @param tokens: the bearer tokens: L{Credential}s (L{tokenFile}), or
            plain secrets, each then allowed everything.
        """
        self._clock = clock
        self.tokens = tokens
        self.signingKeys = signingKeys

    @property
    def enabled(self) -> bool:
        return self.tokens is not None or self.signingKeys is not None

    def reload(self) -> None:
        """
        Re-read every secret file now (on C{SIGHUP}).
        """
        for source in (self.tokens, self.signingKeys):
            if source is not None:
                source.reload()

    def check(self, request: Any) -> Credential | None:
        """
        Let C{request} through or refuse it.

        @return: the credential of its bearer token, whose scope is checked
            once the path is known; L{None} for a signed URL (its signature
            names the path and method) or when nothing is checked.
        @raise Unauthorized: with a C{WWW-Authenticate} challenge.
        """
        if not self.enabled:
            return None
        rawPath, _, query = request.uri.partition(b"?")
        if self.signingKeys is not None and hasSignature(query):
            try:
                checkSignature(
                    self.signingKeys.current(), request.method, rawPath, query,
                    self._clock.seconds(),
                )
            except Unauthorized as e:
                e.headers[b"WWW-Authenticate"] = CHALLENGE
                raise
            return None
        return self._checkBearer(request)

    def _checkBearer(self, request: Any) -> Credential:
        values = request.requestHeaders.getRawHeaders(b"Authorization") or []
        if not values:
            raise Unauthorized(
                "no-credentials", "authentication required",
                {b"WWW-Authenticate": CHALLENGE},
            )
        invalid = {b"WWW-Authenticate": CHALLENGE + b', error="invalid_token"'}
        scheme, _, token = values[0].strip().partition(b" ")
        if len(values) != 1 or scheme.lower() != b"bearer" or self.tokens is None:
            raise Unauthorized("bad-credentials", "use Authorization: Bearer <token>", invalid)
        credentials = [
            c if isinstance(c, Credential) else Credential(c) for c in self.tokens.current()
        ]
        found = _findEqual(token.strip(), [c.token for c in credentials])
        if found is None:
            raise Unauthorized("bad-token", "the token is not valid", invalid)
        return credentials[found]


def _findEqual(given: bytes, secrets: Sequence[bytes]) -> int | None:
    """
    Which of C{secrets} C{given} is, in time that depends on neither which
    one nor how much of it matched: every secret is compared, and digests of
    equal length are compared rather than the secrets.
    """
    digest = hashlib.sha256(given).digest()
    found = None
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(digest, hashlib.sha256(secret).digest()):
            found = index
    return found


class ReloadOnSignal(service.Service):
    """
    Calls C{reload} on the reactor thread whenever the process gets
    C{SIGHUP}, while the service runs; the previous handler is put back when
    it stops.
    """

    signalNumber = signal.SIGHUP

    def __init__(self, reload: Callable[[], None], reactor: Any) -> None:
        self._reload = reload
        self._reactor = reactor
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: object) -> None:
        callFromThread = getattr(self._reactor, "callFromThread", None)
        if callFromThread is not None:
            callFromThread(self._reload)
        else:
            self._reload()

    def startService(self) -> None:
        super().startService()
        try:
            self._previous = signal.signal(self.signalNumber, self._handler)
        except ValueError:
            log.warn("not in the main thread: secrets are not reloaded on SIGHUP")
        else:
            self._installed = True

    def stopService(self) -> None:
        super().stopService()
        if self._installed:
            signal.signal(self.signalNumber, self._previous)
            self._installed = False
