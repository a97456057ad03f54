#!/usr/bin/env python3
"""The OpenAPI checks of .ci/e2e around schemathesis (check_openapi_schemathesis).

  openapi_checks.py version URL     the document at URL is JSON with "openapi": "3.1.x"
  openapi_checks.py junit PATH      schemathesis's JUnit report at PATH ran test cases and has no
                                    failure or error (cross-checks its exit status)
"""

import xml.etree.ElementTree as ET

from e2elib import CheckFailed, get_json, log, main


def version(url):
    doc = get_json(url)
    v = doc.get("openapi")
    if not isinstance(v, str) or not (v == "3.1" or v.startswith("3.1.")):
        raise CheckFailed(f'{url}: "openapi" is {v!r}, expected 3.1.x')
    info = doc.get("info", {})
    ops = sum(
        1
        for item in doc.get("paths", {}).values()
        for m in item
        if m in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )
    log(f"{url}: OpenAPI {v}, {info.get('title')!r} {info.get('version')}, {len(doc.get('paths', {}))} paths, {ops} operations")


def junit(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise CheckFailed(f"schemathesis's JUnit report {path}: {e}") from e
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(s.get("tests", 0)) for s in suites)
    bad = [
        f"{c.get('name')}: {child.tag} {(child.get('message') or child.text or '').strip()[:300]}"
        for s in suites
        for c in s.iter("testcase")
        for child in c
        if child.tag in ("failure", "error")
    ]
    if tests == 0:
        raise CheckFailed(f"schemathesis's JUnit report {path} has no test case")
    if bad:
        raise CheckFailed(f"schemathesis's JUnit report {path}: {len(bad)} failed:\n  " + "\n  ".join(bad))
    log(f"JUnit report {path}: {tests} test cases, no failure or error")


if __name__ == "__main__":
    main({"version": version, "junit": junit})
