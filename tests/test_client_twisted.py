"""
The client's contract with Twisted: it imports only public Twisted names, and
each Twisted attribute it relies on beyond a plain import is checked here, so
that a Twisted release that renames one fails this module with a message
naming the attribute (not an upload that misreports a failure in the field).
"""

from __future__ import annotations

import ast
import importlib
import os
from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import uploadsvc.client

CLIENT = os.path.dirname(os.path.abspath(uploadsvc.client.__file__))

#: (module, name, attribute or None, who relies on it and why): every
#: Twisted name the client uses beyond a plain import of a public module.
RELIED_ON: list[tuple[str, str, str | None, str]] = [
    ("twisted.web.client", "ResponseFailed", None,
     "uploadsvc.client.errors (a wrapper of a request's causes)"),
    ("twisted.web.client", "ResponseNeverReceived", None,
     "uploadsvc.client.errors and uploadsvc.client.testing (a response that never came)"),
    ("twisted.web.client", "RequestTransmissionFailed", None,
     "uploadsvc.client.errors (a wrapper of a request's causes)"),
    ("twisted.web.client", "RequestGenerationFailed", None,
     "uploadsvc.client.errors (a wrapper of a request's causes)"),
    ("twisted.web.client", "ResponseDone", None,
     "uploadsvc.client.exchange (the end of an answer's body)"),
    ("twisted.web.http", "PotentialDataLoss", None,
     "uploadsvc.client.exchange (an answer without a length, read to the end)"),
    ("twisted.web.client", "HTTPConnectionPool", "retryAutomatically",
     "uploadsvc.client.http (Twisted's own retries are turned off: the uploader retries)"),
    ("twisted.web.client", "HTTPConnectionPool", "maxPersistentPerHost",
     "uploadsvc.client.http (idle connections kept per host)"),
    ("twisted.protocols.tls", "TLSMemoryBIOProtocol", "failVerification",
     "uploadsvc.client.tls (the reason a refused certificate is reported with)"),
]


def _privateTwistedImports(path: str) -> list[str]:
    """
    The imports in the file at C{path} of a Twisted module or name whose
    dotted path has a part with a leading underscore.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "twisted" and any(p.startswith("_") for p in parts):
                found.append(f"{os.path.basename(path)}:{node.lineno}: {name}")
    return found


class PublicNamesOnlyTests(SynchronousTestCase):
    """
    The client imports no private Twisted module or name.
    """

    def test_noPrivateImports(self) -> None:
        """
        No module of L{uploadsvc.client} imports a Twisted name with a
        leading underscore anywhere in its dotted path (such as
        C{twisted.web._newclient}).
        """
        modules = sorted(n for n in os.listdir(CLIENT) if n.endswith(".py"))
        self.assertIn("errors.py", modules)
        found: list[str] = []
        for name in modules:
            found.extend(_privateTwistedImports(os.path.join(CLIENT, name)))
        self.assertEqual(found, [], "private Twisted names imported by the client")

    def test_detectsPrivateImports(self) -> None:
        """
        The check above sees both forms of a private import.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                "from twisted.web._newclient import ResponseFailed\n"
                "from twisted.web.client import _WrapperException\n"
                "import twisted.web._http2\n"
                "from twisted.web.client import Agent\n"
            )
        self.assertEqual(
            _privateTwistedImports(path),
            [
                f"{os.path.basename(path)}:1: twisted.web._newclient.ResponseFailed",
                f"{os.path.basename(path)}:2: twisted.web.client._WrapperException",
                f"{os.path.basename(path)}:3: twisted.web._http2",
            ],
        )


class TwistedContractTests(SynchronousTestCase):
    """
    What the client relies on in Twisted is still there.
    """

    def require(self, module: str, name: str, attribute: str | None, usedBy: str) -> Any:
        """
        Fail, naming the missing Twisted attribute and its user, unless
        C{module.name[.attribute]} exists.
        """
        dotted = f"{module}.{name}" + (f".{attribute}" if attribute else "")
        try:
            value = getattr(importlib.import_module(module), name)
            if attribute is not None:
                value = getattr(value, attribute)
        except (ImportError, AttributeError):
            self.fail(f"Twisted no longer provides {dotted}, which {usedBy} relies on")
        return value

    def test_reliedOnNamesExist(self) -> None:
        """
        Every name and attribute in L{RELIED_ON} exists.
        """
        for module, name, attribute, usedBy in RELIED_ON:
            self.require(module, name, attribute, usedBy)

    def test_requireNamesTheAttribute(self) -> None:
        """
        A missing attribute fails with a message that names it and its user.
        """
        error = self.assertRaises(
            self.failureException,
            self.require, "twisted.web.client", "ResponseFailed", "renamedReasons", "a test",
        )
        self.assertEqual(
            str(error),
            "Twisted no longer provides twisted.web.client.ResponseFailed.renamedReasons,"
            " which a test relies on",
        )

    def test_wrappersCarryReasons(self) -> None:
        """
        Each wrapper exception the client unwraps keeps its causes in
        C{.reasons}, and C{ResponseNeverReceived} is one of them.
        """
        from uploadsvc.client.errors import WRAPPERS

        never = self.require(
            "twisted.web.client", "ResponseNeverReceived", None, "uploadsvc.client.errors"
        )
        self.assertTrue(
            issubclass(never, WRAPPERS),
            "twisted.web.client.ResponseNeverReceived is no longer a ResponseFailed:"
            " uploadsvc.client.errors.WRAPPERS must list it",
        )
        cause = Failure(ConnectionLost())
        for wrapper in WRAPPERS + (never,):
            reasons = getattr(wrapper([cause]), "reasons", None)
            if reasons != [cause]:
                self.fail(
                    f"twisted.web.client.{wrapper.__name__}.reasons no longer holds the"
                    " causes, which uploadsvc.client.errors reads"
                )


class UnwrapTests(SynchronousTestCase):
    """
    L{uploadsvc.client.errors.classifyFailure} finds the cause inside every
    public wrapper.
    """

    def test_eachWrapper(self) -> None:
        """
        A lost connection inside any wrapper is retried as "connection lost";
        a TLS failure inside any wrapper is fatal.
        """
        from uploadsvc.client.errors import WRAPPERS, Fatal, Retryable, classifyFailure

        for wrapper in WRAPPERS:
            lost = classifyFailure(Failure(wrapper([Failure(ConnectionLost())])), "http://h/")
            self.assertEqual((type(lost), lost.reason), (Retryable, "connection lost"), wrapper)
            tls = classifyFailure(
                Failure(wrapper([Failure(SSL.Error([("SSL routines", "", "bad certificate")]))])),
                "https://h/",
            )
            self.assertIsInstance(tls, Fatal, wrapper)

    def test_nested(self) -> None:
        """
        A wrapper inside a wrapper is unwrapped too.
        """
        from twisted.web.client import RequestTransmissionFailed, ResponseFailed

        from uploadsvc.client.errors import classifyFailure

        inner = Failure(RequestTransmissionFailed([Failure(ConnectionLost())]))
        self.assertEqual(
            classifyFailure(Failure(ResponseFailed([inner])), "http://h/").reason,
            "connection lost",
        )
