"""
Hypothesis strategies for the headers of a proxy in front of the server
(L{uploadsvc.protocol.forwarded}): hosts, schemes, path prefixes, and whole
C{Forwarded} headers with the elements they encode. For property tests of
the parser and of anything that builds URLs from it.
"""

from __future__ import annotations

import ipaddress
import string

from hypothesis import strategies as st

_TOKEN_CHARS = "!#$%&'*+.^_`|~" + string.ascii_letters + string.digits + "-"
_LABEL_CHARS = string.ascii_letters + string.digits


@st.composite
def dnsNames(draw: st.DrawFn) -> str:
    """
    A DNS name: labels of letters, digits and inner hyphens.
    """
    labels = draw(
        st.lists(
            st.text(_LABEL_CHARS, min_size=1, max_size=10).flatmap(
                lambda edge: st.text(_LABEL_CHARS + "-", max_size=8).map(
                    lambda middle: edge[0] + middle + edge[-1] if middle else edge
                )
            ),
            min_size=1,
            max_size=4,
        )
    )
    return ".".join(labels)


def hosts() -> st.SearchStrategy[str]:
    """
    A URL authority's host and maybe port: a DNS name, an IPv4 address or
    a bracketed IPv6 address.
    """
    names = st.one_of(
        dnsNames(),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    )
    ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
    return st.tuples(names, ports).map("".join)


def schemes() -> st.SearchStrategy[str]:
    return st.sampled_from(["http", "https", "HTTP", "Https"])


def prefixes() -> st.SearchStrategy[str]:
    """
    A path prefix a proxy may send: C{/}, or segments of path characters
    and percent escapes (never C{.} or C{..}).
    """
    segment = st.text(
        string.ascii_letters + string.digits + "-_~!$&'()*+;=:@", min_size=1, max_size=8
    ).filter(lambda s: s not in (".", ".."))
    return st.one_of(
        st.just("/"),
        st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    )


def tokens() -> st.SearchStrategy[str]:
    return st.text(_TOKEN_CHARS, min_size=1, max_size=12)


def _quote(value: str) -> str:
    """
    C{value} as an RFC 7230 token if it is one, else a quoted-string.
    """
    if value and all(c in _TOKEN_CHARS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def forwardedHeaders(draw: st.DrawFn) -> tuple[bytes, list[dict[str, str]]]:
    """
    A C{Forwarded} header value and the elements it holds (names in lower
    case): each element's parameters are some of C{for}, C{by}, C{proto},
    C{host} and tokens of other names, with values quoted when they must be.
    """
    values = st.one_of(
        tokens(),
        hosts(),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        st.text(string.printable.strip() + " ", max_size=16),
    )
    elements = draw(
        st.lists(
            st.dictionaries(
                st.one_of(st.sampled_from(["for", "by", "proto", "host"]), tokens().map(str.lower)),
                values,
                min_size=1,
                max_size=4,
            ),
            min_size=1,
            max_size=4,
        )
    )
    spaces = st.sampled_from(["", " ", "  "])
    parts = []
    for element in elements:
        pairs = [
            f"{draw(st.sampled_from([name, name.upper()]))}={_quote(value)}"
            for name, value in element.items()
        ]
        parts.append(";".join(pairs))
    header = ("," + draw(spaces)).join(parts)
    return header.encode("latin-1"), elements


def ipPeers() -> st.SearchStrategy[str]:
    """
    Peer addresses as twisted gives them (IPv4, IPv6, IPv4-mapped IPv6).
    """
    return st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    )


def networks() -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    v4 = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)
    )
    v6 = st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False)
    )
    return st.one_of(v4, v6)  # type: ignore[return-value]
