"""
Turn trial's closing summary into one plain line: "N passed, M failed".

trial ends with e.g. "PASSED (successes=12)" or
"FAILED (skips=1, failures=2, errors=1, successes=40)"; failures, errors and
unexpected successes count as failed, skips are reported after them.
"""

import re
import sys


def main() -> int:
    summary = None
    for line in sys.stdin:
        if re.match(r"^(PASSED|FAILED) \(", line):
            summary = line
    if summary is None:
        print("0 passed, 1 failed")  # trial did not finish: count it as failed
        return 1
    counts = dict(
        (k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", summary)
    )
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get(
        "unexpectedSuccesses", 0
    )
    line = f"{passed} passed, {failed} failed"
    if counts.get("skips"):
        line += f", {counts['skips']} skipped"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
