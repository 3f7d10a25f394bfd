"""
Tests for L{uploadsvc.client.plan}: which file goes to which URL.
"""

from __future__ import annotations

import os
import unicodedata

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.client.plan import PlanError, planUploads


class PlanTests(SynchronousTestCase):
    """
    L{planUploads}.
    """

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def touch(self, *parts: str) -> str:
        path = os.path.join(self.base, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")
        return path

    def test_singleFileExactURL(self) -> None:
        """
        One file and a URL without a trailing slash: the URL names the file.
        """
        path = self.touch("a.bin")
        plan = planUploads([path], "http://h/x/y.bin")
        self.assertEqual([(j.path, j.url) for j in plan.jobs], [(path, "http://h/x/y.bin")])

    def test_filesUnderSlash(self) -> None:
        """
        With a trailing slash each file goes to URL + its base name.
        """
        a = self.touch("one", "a.bin")
        b = self.touch("two", "b.bin")
        plan = planUploads([a, b], "https://h/up/")
        self.assertEqual([j.url for j in plan.jobs], ["https://h/up/a.bin", "https://h/up/b.bin"])
        self.assertEqual([j.label for j in plan.jobs], ["a.bin", "b.bin"])

    def test_directoryTree(self) -> None:
        """
        A directory goes with its name and its tree, in sorted order, and
        names starting with a dot are skipped and listed.
        """
        self.touch("photos", "2026", "b.jpg")
        self.touch("photos", "2026", "a.jpg")
        self.touch("photos", "top.jpg")
        self.touch("photos", ".cache", "x")
        self.touch("photos", ".DS_Store")
        plan = planUploads([os.path.join(self.base, "photos") + "/"], "http://h/")
        self.assertEqual(
            [j.url for j in plan.jobs],
            ["http://h/photos/top.jpg", "http://h/photos/2026/a.jpg", "http://h/photos/2026/b.jpg"],
        )
        self.assertEqual(
            sorted(os.path.basename(p) for p, _ in plan.skipped), [".DS_Store", ".cache"]
        )

    def test_encodingAndNFC(self) -> None:
        """
        Names are put in NFC and percent-encoded per component.
        """
        decomposed = unicodedata.normalize("NFD", "été 100%#?.txt")
        path = self.touch(decomposed)
        (job,) = planUploads([path], "http://h/u/").jobs
        self.assertEqual(job.url, "http://h/u/%C3%A9t%C3%A9%20100%25%23%3F.txt")

    def test_errors(self) -> None:
        """
        Bad URLs, missing files, and several files (or a directory) without a
        trailing slash are refused.
        """
        a = self.touch("a")
        b = self.touch("b")
        self.assertRaises(PlanError, planUploads, [a], "ftp://h/a")
        self.assertRaises(PlanError, planUploads, [a], "not a url")
        self.assertRaises(PlanError, planUploads, [a, b], "http://h/x")
        self.assertRaises(PlanError, planUploads, [self.base], "http://h/x")
        self.assertRaises(PlanError, planUploads, [os.path.join(self.base, "nope")], "http://h/")
        self.assertRaises(PlanError, planUploads, [], "http://h/")
