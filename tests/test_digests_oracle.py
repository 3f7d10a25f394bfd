"""
Property tests of the structured-field Dictionary parser behind
L{uploadsvc.protocol.digests.parseDigestHeader}, against C{http-sfv}, an
independent RFC 9651 implementation used as an oracle only (the strict
parser of our own stays: it decodes only what the digests need and caps
what it reads).
"""

from __future__ import annotations

import re

import http_sfv
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.errors import BadRequest
from uploadsvc.protocol.digests import _Parser

_properties = settings(max_examples=500, deadline=None)


def _mostlyValid(valid: list[str], broken: list[str]) -> st.SearchStrategy[str]:
    """
    One of C{valid} nine times in ten, else one of C{broken}: a text
    with several pieces then parses often enough, and fails on one piece.
    """
    return st.integers(0, 9).flatmap(
        lambda n: st.sampled_from(broken if n == 0 else valid)
    )


_VALID_KEYS = ["a", "sha-256", "id-sha-512", "*", "*x", "a_b.c*", "z9"]
_BROKEN_KEYS = ["A", "1a", "-a", "a b", "", "aé"]
_VALID_ITEMS = [
    "1", "-0", "123456789012345", "1.5", "-1.125", "123456789012.1", "?0", "?1", '"x"',
    '"a\\"b\\\\c"', ":AAAA:", ":AA==:", ":AAA=:", "::", ":ab+/:", "tok", "t/k:1", "*t",
    "Tok!#$", "@0", "@-12", '%"caf%c3%a9"',
]
_BROKEN_ITEMS = [
    "1234567890123456", "1234567890123.1", "1.1234", "1.", "-", "--1", "?2", "?", '"\\n"',
    '"unterminated', ":AA=A:", ":A:", ":no end", "@1.5", "@x", '%"%C3%A9"', '%"%ff"',
    '%"x', "%x", "é", '"\x7f"',
]
_keys = _mostlyValid(_VALID_KEYS, _BROKEN_KEYS)
_bareItems = _mostlyValid(_VALID_ITEMS, _BROKEN_ITEMS)


@st.composite
def _params(draw: st.DrawFn) -> str:
    out = ""
    for key in draw(st.lists(_keys, max_size=2)):
        out += ";" + draw(st.sampled_from(["", " "])) + key
        if draw(st.booleans()):
            out += "=" + draw(_bareItems)
    return out


@st.composite
def _value(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        items = draw(st.lists(st.tuples(_bareItems, _params()), max_size=3))
        sep = draw(st.sampled_from([" ", "  ", "\t", ""]))
        inner = sep.join(item + params for item, params in items)
        return "(" + draw(st.sampled_from(["", " "])) + inner + ")" + draw(_params())
    return draw(_bareItems) + draw(_params())


@st.composite
def dictionaryTexts(draw: st.DrawFn) -> str:
    """
    Field values made of valid and broken pieces of a Dictionary, so that
    many parse and many do not.
    """
    members = []
    for key in draw(st.lists(_keys, min_size=1, max_size=4)):
        if draw(st.integers(0, 3)) == 0:
            members.append(key + draw(_params()))
        else:
            members.append(key + "=" + draw(_value()))
    text = draw(_mostlyValid([",", ", ", " ,\t"], [",,", " ", ",\t,"])).join(members)
    return draw(_mostlyValid(["", " "], ["\t"])) + text + draw(_mostlyValid(["", " "], [","]))


def _oracle(text: str) -> http_sfv.Dictionary | None:
    """
    http-sfv's parse of C{text}, or L{None} when it refuses it.
    """
    dictionary = http_sfv.Dictionary()
    if text.strip(" ") == "":
        # RFC 9651 section 4.2.2 parses an empty field value as an empty
        # Dictionary; http-sfv 0.9.9 refuses it.
        return dictionary
    try:
        dictionary.parse(text.encode("latin-1"))
    except ValueError:
        return None
    return dictionary


def _ours(text: str) -> list[tuple[str, object]] | None:
    """
    Our parse of C{text}, or L{None} when it refuses it.
    """
    try:
        return _Parser(text).parseDictionary()
    except BadRequest:
        return None


# http-sfv 0.9.9 accepts a decimal that ends in "." (e.g. "1."), which RFC
# 9651 section 4.2.4 says to refuse ("If input_number ends with '.', fail").
_DECIMAL_WITHOUT_FRACTION = re.compile(r"(?<![A-Za-z0-9_.*:/%-])-?[0-9]{1,12}\.(?![0-9])")


class OracleTests(SynchronousTestCase):
    """
    Our Dictionary parser and http-sfv agree.
    """

    def assertSameMembers(self, text: str, oracle: http_sfv.Dictionary) -> None:
        ours = _ours(text)
        self.assertIsNotNone(ours, f"we refuse {text!r}, http-sfv accepts it")
        assert ours is not None
        self.assertEqual([key for key, _ in ours], list(oracle.keys()), text)
        for key, value in ours:
            theirs = oracle[key]
            if isinstance(theirs, http_sfv.Item) and isinstance(theirs.value, bytes):
                self.assertEqual(value, theirs.value, f"{key} in {text!r}")

    @given(dictionaryTexts())
    @_properties
    def test_acceptRefuse(self, text: str) -> None:
        """
        For generated field values, we accept exactly what http-sfv accepts
        (except where http-sfv is laxer than RFC 9651, and we refuse), with
        the same keys in the same order and the same byte sequences.
        """
        oracle = _oracle(text)
        if oracle is None:
            self.assertIsNone(_ours(text), f"we accept {text!r}, http-sfv refuses it")
        elif _DECIMAL_WITHOUT_FRACTION.search(text) and _ours(text) is None:
            # Only that laxity may explain a refusal: the same text with the
            # dot made a fraction must then be accepted by both.
            fixed = _DECIMAL_WITHOUT_FRACTION.sub(lambda m: m.group() + "0", text)
            oracle = _oracle(fixed)
            self.assertIsNotNone(oracle, fixed)
            assert oracle is not None
            self.assertSameMembers(fixed, oracle)
        else:
            self.assertSameMembers(text, oracle)

    @given(dictionaryTexts())
    @_properties
    def test_serialized(self, text: str) -> None:
        """
        Whatever http-sfv accepts, it serializes to a form we parse to the
        same keys and byte sequences.
        """
        oracle = _oracle(text)
        if not oracle:
            return
        canonical = str(oracle)
        again = _oracle(canonical)
        assert again is not None
        self.assertSameMembers(canonical, again)

    def test_eachBrokenPiece(self) -> None:
        """
        Every broken key and item of the generators, alone in an otherwise
        valid field (as a member's key or value, a parameter's, or in an
        inner list), is refused by both.
        """
        for key in _BROKEN_KEYS:
            for text in [f"{key}=1", f"a=1, {key}", f"a=1;{key}=2", f"a=1;{key}"]:
                self.assertIsNone(_oracle(text), text)
                self.assertIsNone(_ours(text), text)
        for item in _BROKEN_ITEMS:
            for text in [f"a={item}", f"a=1, b={item};p", f"a=1;p={item}", f"a=(1 {item})"]:
                if item != "1.":  # see _DECIMAL_WITHOUT_FRACTION
                    self.assertIsNone(_oracle(text), text)
                self.assertIsNone(_ours(text), text)
        for key in _VALID_KEYS:
            for item in _VALID_ITEMS:
                text = f"{key}={item};{key}={item}, z=({item} {item});q"
                oracle = _oracle(text)
                self.assertIsNotNone(oracle, text)
                assert oracle is not None
                self.assertSameMembers(text, oracle)

    @given(st.text(alphabet=' \t,;=()"\\:?@%*-.019aAzZ+/_~!é', max_size=24))
    @_properties
    def test_arbitrary(self, text: str) -> None:
        """
        On arbitrary short strings over the characters that matter to the
        grammar, a refusal by http-sfv is a refusal by us.
        """
        if _oracle(text) is None:
            self.assertIsNone(_ours(text), f"we accept {text!r}, http-sfv refuses it")
