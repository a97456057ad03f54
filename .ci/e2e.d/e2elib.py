"""Shared helpers of the end-to-end checks (.ci/e2e): HTTP with the standard library, polling, output.

Python 3 standard library only. Each check script imports this module (it sits beside them) and exits 0
on success, 1 on a failed check (after printing why), 2 on a usage error.
"""

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class CheckFailed(Exception):
    """A check did not hold; the message says what was expected and what was seen."""


def log(msg):
    print(f"  {msg}", flush=True)


def fatal(msg):
    """Fails at once, without retrying (a state waiting cannot change)."""
    print(f"FAILED: {msg}", flush=True)
    sys.exit(1)


def http_get(url, timeout=5.0):
    """(status, body as text) of a GET; status 0 and the error's text when nothing answered."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def get_json(url, timeout=5.0):
    """The JSON body of a GET that must answer 200."""
    status, body = http_get(url, timeout)
    if status != 200:
        raise CheckFailed(f"GET {url}: HTTP {status}: {body[:500]}")
    try:
        return json.loads(body)
    except ValueError as e:
        raise CheckFailed(f"GET {url}: not JSON ({e}): {body[:500]}") from e


def prom_query(prom_url, expr):
    """The result of an instant query to Prometheus's HTTP API (a list of samples)."""
    url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    doc = get_json(url)
    if doc.get("status") != "success":
        raise CheckFailed(f"query {expr!r}: {doc}")
    return doc["data"]["result"]


def poll(what, timeout, interval, attempt):
    """Calls attempt() until it returns a value other than None (returned) or `timeout` seconds passed.

    attempt() may raise CheckFailed for a not-yet state: the last such message is given on timeout.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt finished"
    while True:
        try:
            v = attempt()
            if v is not None:
                return v
        except CheckFailed as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{what}: not after {timeout:g} s; last: {last}")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) counts as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def free_port():
    """A TCP port on 127.0.0.1 free right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(checks):
    """Runs the check named by argv[1] from `checks` (name -> function taking the remaining args)."""
    if len(sys.argv) < 2 or sys.argv[1] not in checks:
        print(f"usage: {sys.argv[0]} {{{'|'.join(checks)}}} ...", file=sys.stderr)
        sys.exit(2)
    try:
        checks[sys.argv[1]](*sys.argv[2:])
    except CheckFailed as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
