"""Print one closing line that adds up pytest JUnit XML reports: 'pytest: N passed, N failed, N skipped'.

usage: python junit_total.py REPORT.xml...   (missing reports are skipped; exit 1 when a test failed or errored)
"""

import os
import sys
import xml.etree.ElementTree as ET


def main(paths):
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for path in paths:
        if not os.path.exists(path):
            continue
        root = ET.parse(path).getroot()
        for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
            for key in total:
                total[key] += int(suite.get(key, 0))
    failed = total["failures"] + total["errors"]
    passed = total["tests"] - failed - total["skipped"]
    print(f"pytest: {passed} passed, {failed} failed, {total['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
