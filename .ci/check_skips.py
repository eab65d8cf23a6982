"""Fail CI on skips other than the expected ones (no real GPU on CI machines)."""

import re
import sys
import xml.etree.ElementTree as ET

ALLOWED = re.compile(r"no (real )?(CUDA )?GPU|requires a real GPU|no CUDA device", re.IGNORECASE)


def main(path):
    root = ET.parse(path).getroot()
    total = bad = 0
    for case in root.iter("testcase"):
        total += 1
        for skip in case.findall("skipped"):
            message = skip.get("message", "") + " " + (skip.text or "")
            if not ALLOWED.search(message):
                bad += 1
                print(f"unexpected skip: {case.get('classname')}::{case.get('name')}: "
                      f"{message.strip()}")
    if total == 0:
        print("no tests ran")
        return 1
    print(f"skip check: {total} test cases, {bad} unexpected skips")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
