"""
Tests for L{uploadsvc.protocol.expiry}.
"""

from twisted.trial.unittest import SynchronousTestCase

from uploadsvc.protocol.expiry import expiresAt, httpDate, secondsLeft


class ExpiryRuleTests(SynchronousTestCase):
    def test_off(self) -> None:
        self.assertIsNone(expiresAt(100.0, 0))
        self.assertIsNone(secondsLeft(100.0, 150.0, 0))

    def test_left(self) -> None:
        self.assertEqual(expiresAt(100.0, 60), 160.0)
        self.assertEqual(secondsLeft(100.0, 130.5, 60), 29)
        self.assertEqual(secondsLeft(100.0, 500.0, 60), 0)

    def test_httpDate(self) -> None:
        self.assertEqual(httpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT")
