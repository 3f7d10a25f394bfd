"""
The client's layout (issue 9 item 6): value types stand alone, the modules
import one another without a cycle, and no module reaches into another
object's private attributes (each gets what it needs passed in).
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import uploadsvc.client

CLIENT = os.path.dirname(os.path.abspath(uploadsvc.client.__file__))
PACKAGE = "uploadsvc.client"

#: Underscored names that are public API (C{namedtuple._replace}).
_PUBLIC_UNDERSCORED = {"_replace"}


def _modules() -> dict[str, ast.Module]:
    """
    Every module of L{uploadsvc.client} but the package's own
    C{__init__}, by short name, parsed.
    """
    trees = {}
    for name in sorted(os.listdir(CLIENT)):
        if name.endswith(".py") and name != "__init__.py":
            with open(os.path.join(CLIENT, name), encoding="utf-8") as f:
                trees[name[:-3]] = ast.parse(f.read(), name)
    return trees


def _imported(tree: ast.Module) -> set[str]:
    """
    The dotted names of every module that C{tree} imports anywhere (at the
    top, in a function, under C{TYPE_CHECKING}).
    """
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """
    A cycle in C{graph} (node to the nodes it points at), as the list of its
    nodes with the first repeated at the end, or L{None}.
    """
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _foreignPrivates(name: str, tree: ast.Module) -> list[str]:
    """
    Reads of an underscored attribute of anything but C{self} or C{cls}
    in C{tree}.
    """
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in _PUBLIC_UNDERSCORED
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{name}.py:{node.lineno}: {ast.unparse(node)}")
    return found


class LayoutTests(SynchronousTestCase):
    """
    How the client's modules depend on one another.
    """

    def test_modules(self) -> None:
        """
        The split is there: value types, sans-IO decisions, HTTP plumbing
        and the loop each in a module of their own.
        """
        self.assertTrue({"jobs", "decisions", "exchange", "uploader"} <= set(_modules()))

    def test_valueTypesStandAlone(self) -> None:
        """
        L{uploadsvc.client.jobs} imports nothing from uploadsvc and nothing
        from Twisted.
        """
        imported = _imported(_modules()["jobs"])
        self.assertEqual(
            sorted(n for n in imported if n.startswith(("uploadsvc", "twisted", "treq"))), []
        )

    def test_noImportCycle(self) -> None:
        """
        The client's modules import one another without a cycle, counting
        imports under C{TYPE_CHECKING} and inside functions too.
        """
        trees = _modules()
        graph = {
            name: {
                imported[len(PACKAGE) + 1:]
                for imported in _imported(tree)
                if imported.startswith(PACKAGE + ".")
            }
            for name, tree in trees.items()
        }
        self.assertIsNone(_cycle(graph))

    def test_cycleFound(self) -> None:
        """
        The cycle check finds a cycle, and names it.
        """
        self.assertEqual(_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}))

    def test_noForeignPrivates(self) -> None:
        """
        No client module reads an underscored attribute of another object
        (as the file upload once read its uploader's C{_headers},
        C{_observer}, C{_cooperator}...).
        """
        found: list[str] = []
        for name, tree in _modules().items():
            found.extend(_foreignPrivates(name, tree))
        self.assertEqual(found, [])

    def test_foreignPrivatesFound(self) -> None:
        """
        The check above sees a read of another object's private attribute,
        and lets C{self._x} and C{namedtuple._replace} be.
        """
        tree = ast.parse("self._a\nself._u._b\nother._c\nparts._replace()\n")
        self.assertEqual(
            _foreignPrivates("m", tree), ["m.py:2: self._u._b", "m.py:3: other._c"]
        )
