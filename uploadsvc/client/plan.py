"""
Which local file goes to which URL.

C{FILE... URL}: when C{URL} ends with C{/}, each file goes to C{URL} plus its
base name, and a directory goes with its tree (C{photos/2026/a.jpg} for
C{photos} holding C{2026/a.jpg}); otherwise there must be exactly one file,
and C{URL} names it. Names are put in Unicode NFC and percent-encoded one
component at a time, as docs/protocol.md section 1 expects. Names that start with
a dot are reserved by the server, so such files and folders are skipped (and
listed as skipped).
"""

from __future__ import annotations

import os
import stat
import unicodedata
from typing import Sequence
from urllib.parse import quote, urlsplit

import attrs

from uploadsvc.client.jobs import UploadJob


class PlanError(Exception):
    """
    The arguments do not describe an upload.
    """


@attrs.frozen
class Plan:
    """
    @ivar jobs: the files to upload.
    @ivar skipped: C{(path, reason)} for what is left out.
    """

    jobs: tuple[UploadJob, ...]
    skipped: tuple[tuple[str, str], ...]


def _component(name: str) -> str | None:
    """
    The percent-encoded URL component for a file name, or L{None} when the
    name cannot be sent (not decodable, reserved).
    """
    try:
        encoded = unicodedata.normalize("NFC", name).encode("utf-8")
    except UnicodeEncodeError:
        return None
    return quote(encoded, safe="")


def _checkURL(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PlanError(f"not an http or https URL: {url}")


def planUploads(sources: Sequence[str], url: str) -> Plan:
    """
    Map C{sources} (files and directories) to destination URLs.

    @raise PlanError: for a bad URL, a missing source, or several sources
        (or a directory) with a URL that does not end with C{/}.
    """
    _checkURL(url)
    if not sources:
        raise PlanError("no files given")
    jobs: list[UploadJob] = []
    skipped: list[tuple[str, str]] = []
    if not url.endswith("/"):
        if len(sources) != 1 or not os.path.isfile(sources[0]):
            raise PlanError("several files or a directory need a URL that ends with /")
        return Plan((UploadJob(sources[0], url, os.path.basename(sources[0])),), ())
    for source in sources:
        try:
            mode = os.stat(source).st_mode
        except OSError as e:
            raise PlanError(f"{source}: {e.strerror}") from None
        base = os.path.basename(os.path.abspath(source))
        if stat.S_ISDIR(mode):
            _walk(source, [base], url, jobs, skipped)
        else:
            _add(source, [base], url, jobs, skipped)
    return Plan(tuple(jobs), tuple(skipped))


def _add(
    path: str,
    names: list[str],
    url: str,
    jobs: list[UploadJob],
    skipped: list[tuple[str, str]],
) -> None:
    if any(n.startswith(".") for n in names):
        skipped.append((path, "names starting with a dot are reserved by the server"))
        return
    components = [_component(n) for n in names]
    if any(c is None for c in components):
        skipped.append((path, "the name is not valid UTF-8"))
        return
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            skipped.append((path, "not a regular file"))
            return
    except OSError as e:
        skipped.append((path, e.strerror or str(e)))
        return
    jobs.append(UploadJob(path, url + "/".join(c for c in components if c), "/".join(names)))


def _walk(
    top: str,
    prefix: list[str],
    url: str,
    jobs: list[UploadJob],
    skipped: list[tuple[str, str]],
) -> None:
    if prefix[-1].startswith("."):
        skipped.append((top, "names starting with a dot are reserved by the server"))
        return
    for folder, dirs, files in os.walk(top):
        rel = os.path.relpath(folder, top)
        names = prefix + ([] if rel == "." else rel.split(os.sep))
        for d in sorted(dirs):
            if d.startswith("."):
                skipped.append((os.path.join(folder, d), "names starting with a dot are reserved by the server"))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            _add(os.path.join(folder, name), names + [name], url, jobs, skipped)
