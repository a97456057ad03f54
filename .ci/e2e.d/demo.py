#!/usr/bin/env python3
"""Process helpers of .ci/e2e: free ports, waiting for an HTTP endpoint, waiting for the demo's first scan.

  demo.py free-port                       print a free TCP port on 127.0.0.1
  demo.py wait-http URL STATUS PID SECS   wait until GET URL answers STATUS while process PID lives
  demo.py wait-scan SECS                  wait until the demo at $MIAUDIT_URL has finished a scan
"""

import os
import sys

import e2elib
from e2elib import CheckFailed, fatal, get_json, http_get, log, main, pid_alive, poll


def free_port():
    print(e2elib.free_port())


def wait_http(url, status, pid, secs):
    status, pid = int(status), int(pid)

    def attempt():
        if not pid_alive(pid):
            fatal(f"the process (pid {pid}) exited before {url} answered {status}")
        got, body = http_get(url, timeout=2.0)
        if got == status:
            return True
        raise CheckFailed(f"HTTP {got}: {body[:200]}")

    poll(f"GET {url} answering {status}", float(secs), 0.1, attempt)


def wait_scan(secs):
    base = os.environ["MIAUDIT_URL"]

    def attempt():
        doc = get_json(f"{base}/api/v1/scans?limit=10")
        done = [s for s in doc["items"] if s.get("finished_at")]
        if done:
            return done[0]
        seen = ", ".join(f"{s['scan_id']} {s['outcome']}" for s in doc["items"]) or "no scan yet"
        raise CheckFailed(f"no finished scan ({seen})")

    s = poll("a finished scan of the demo", float(secs), 0.2, attempt)
    log(
        f"first scan {s['scan_id']}: {s['outcome']}, complete={s['complete']}, "
        f"summary {s['summary']}"
    )


if __name__ == "__main__":
    main({"free-port": free_port, "wait-http": wait_http, "wait-scan": wait_scan})
