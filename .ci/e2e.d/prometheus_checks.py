#!/usr/bin/env python3
"""The Prometheus checks of .ci/e2e, against a real Prometheus scraping `miaudit demo`.

Reads MIAUDIT_URL (the demo) and PROMETHEUS_URL from the environment.

  prometheus_checks.py target JOB            the scrape target of JOB is up and scrapes $MIAUDIT_URL/metrics
  prometheus_checks.py counts JOB            miaudit_managed_identities in Prometheus equals the demo's
                                             latest scan, per verdict and per tenant
  prometheus_checks.py rules RULES_FILE      every group and rule of RULES_FILE is loaded, and after two
                                             evaluation rounds of each group every rule is healthy

Environment: E2E_TIMEOUT (seconds each check waits, default 60); E2E_SELFTEST_WRONG_COUNT=1 adds 1 to
the expected number of orphaned identities, so `counts` must fail (proves the check can fail).
"""

import os
import re
import subprocess
import time

from e2elib import CheckFailed, fatal, get_json, http_get, log, main, poll, prom_query

MIAUDIT_URL = os.environ.get("MIAUDIT_URL", "")
PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", "")
TIMEOUT = float(os.environ.get("E2E_TIMEOUT", "60"))
ZERO_TIME = "0001-01-01T00:00:00Z"


# --- target ---------------------------------------------------------------------------------------


def target(job):
    want_url = f"{MIAUDIT_URL}/metrics"

    def attempt():
        doc = get_json(f"{PROMETHEUS_URL}/api/v1/targets?state=active")
        ts = [t for t in doc["data"]["activeTargets"] if t["labels"].get("job") == job]
        if len(ts) != 1:
            raise CheckFailed(f"{len(ts)} active targets of job {job!r} (expected 1): {ts}")
        t = ts[0]
        if t["scrapeUrl"] != want_url:
            fatal(f"job {job!r} scrapes {t['scrapeUrl']}, not {want_url}")
        if t["health"] != "up":
            raise CheckFailed(f"target health {t['health']!r}, lastError {t.get('lastError')!r}")
        return t

    t = poll(f"target of job {job!r} up", TIMEOUT, 0.5, attempt)
    if t.get("lastError"):
        raise CheckFailed(f"target is up but has lastError {t['lastError']!r}")
    up = prom_query(PROMETHEUS_URL, f'up{{job="{job}"}}')
    if [s["value"][1] for s in up] != ["1"]:
        raise CheckFailed(f'up{{job="{job}"}} is {up}, expected one sample of 1')
    log(
        f"target {t['scrapeUrl']} up (last scrape {t['lastScrapeDuration']:.4f} s), "
        f'up{{job="{job}"}} = 1'
    )


# --- counts ---------------------------------------------------------------------------------------


def demo_expected():
    """Verdict counts of the demo's latest finished scan, from its JSON API.

    Returns ({verdict: n}, {tenant_id: identities}, scan_id).
    """
    doc = get_json(f"{MIAUDIT_URL}/api/v1/scans?limit=10")
    done = [s for s in doc["items"] if s.get("finished_at")]
    if not done:
        raise CheckFailed("the demo has no finished scan")
    s = done[0]
    if not s["tenants"] or not all(t["inventory_complete"] for t in s["tenants"]):
        # The gauges keep a tenant's previous counts when its inventory was cut short.
        raise CheckFailed(f"the demo's latest scan {s['scan_id']} has a tenant with an incomplete inventory")
    summary = s["summary"]
    verdicts = {v: summary[v] for v in ("healthy", "orphaned", "unknown")}
    if sum(verdicts.values()) != summary["total"]:
        fatal(f"the demo's scan summary does not add up: {summary}")
    if os.environ.get("E2E_SELFTEST_WRONG_COUNT") == "1":
        verdicts["orphaned"] += 1
    tenants = {t["tenant_id"]: t["identities"] for t in s["tenants"]}
    return verdicts, tenants, s["scan_id"]


def table(rows, head):
    w = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    cell = lambda i, c: str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i])
    return "\n".join("    " + "  ".join(cell(i, c) for i, c in enumerate(r)).rstrip() for r in [head, *rows])


def counts(job):
    if os.environ.get("E2E_SELFTEST_WRONG_COUNT") == "1":
        log("self-test: expecting one orphaned identity more than the demo reports; this check must fail")
    metric = f'miaudit_managed_identities{{job="{job}"}}'
    state = {}

    def attempt():
        verdicts, tenants, scan_id = demo_expected()
        samples = prom_query(PROMETHEUS_URL, metric)
        by_verdict, by_tenant = {}, {}
        for smp in samples:
            v, t, n = smp["metric"].get("verdict"), smp["metric"].get("tenant_id"), float(smp["value"][1])
            by_verdict[v] = by_verdict.get(v, 0) + n
            by_tenant[t] = by_tenant.get(t, 0) + n
        rows = [
            (v, verdicts.get(v, "-"), fmt(by_verdict.get(v)), "" if verdicts.get(v) == by_verdict.get(v) else "DIFF")
            for v in sorted(set(verdicts) | set(by_verdict), key=str)
        ]
        rows += [
            (f"tenant {t}", tenants.get(t, "-"), fmt(by_tenant.get(t)), "" if tenants.get(t) == by_tenant.get(t) else "DIFF")
            for t in sorted(set(tenants) | set(by_tenant), key=str)
        ]
        state["last"] = (scan_id, rows, samples)
        if any(r[3] for r in rows):
            raise CheckFailed(
                f"Prometheus's {metric} differs from the demo's scan {scan_id}:\n"
                + table(rows, ("sum by", "demo", "prometheus", ""))
            )
        return rows

    started = time.monotonic()
    try:
        rows = poll(f"{metric} matching the demo", TIMEOUT, 1.0, attempt)
    except CheckFailed as e:
        status, body = http_get(f"{MIAUDIT_URL}/metrics")
        exposed = [l for l in body.splitlines() if l.startswith("miaudit_managed_identities")]
        raise CheckFailed(
            f"{e}\n  the demo's own /metrics (HTTP {status}) says:\n"
            + "\n".join(f"    {l}" for l in exposed or ["(no miaudit_managed_identities line)"])
        ) from None
    log(f"{metric} matches the demo's scan {state['last'][0]} after {time.monotonic() - started:.1f} s:")
    print(table(rows, ("sum by", "demo", "prometheus", "")), flush=True)


def fmt(n):
    if n is None:
        return "-"
    return int(n) if n == int(n) else n


# --- rules ----------------------------------------------------------------------------------------


def parse_rules_file(path):
    """[(group name, [(type, rule name)])] of a Prometheus rules file, read line by line.

    Enough for the shipped file's plain YAML (block style, names unquoted or quoted on their own line);
    `promtool check rules` cross-checks the number of rules found.
    """
    groups = []
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("#"):
            continue
        m = re.match(r"^\s*-\s+name:\s*(.+?)\s*$", line)
        if m:
            groups.append((unquote(m.group(1)), []))
            continue
        m = re.match(r"^\s*-\s+(alert|record):\s*(.+?)\s*$", line)
        if m:
            if not groups:
                fatal(f"{path}: a rule before any group: {line.strip()}")
            groups[-1][1].append(("alerting" if m.group(1) == "alert" else "recording", unquote(m.group(2))))
    return groups


def unquote(s):
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s


def rules(rules_file):
    rules_file = os.path.abspath(rules_file)
    want = parse_rules_file(rules_file)
    n_want = sum(len(r) for _, r in want)
    out = subprocess.run(["promtool", "check", "rules", rules_file], capture_output=True, text=True)
    m = re.search(r"SUCCESS: (\d+) rules found", out.stdout)
    if out.returncode != 0 or not m:
        raise CheckFailed(f"promtool check rules {rules_file}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    if int(m.group(1)) != n_want:
        fatal(f"promtool finds {m.group(1)} rules in {rules_file}, this script's reader {n_want}: fix the reader")
    log(f"{rules_file}: {len(want)} group(s), {n_want} rules (promtool agrees)")

    # Each group evaluated at least twice: its lastEvaluation set, then changed.
    first = {}

    def attempt():
        doc = get_json(f"{PROMETHEUS_URL}/api/v1/rules")
        loaded = [g for g in doc["data"]["groups"] if g["file"] == rules_file]
        names = [g["name"] for g in loaded]
        if names != [g for g, _ in want]:
            raise CheckFailed(f"groups loaded from {rules_file}: {names}, in the file: {[g for g, _ in want]}")
        waiting = []
        for g in loaded:
            last = g.get("lastEvaluation", ZERO_TIME)
            if last == ZERO_TIME:
                waiting.append(f"{g['name']} (never evaluated)")
            elif first.setdefault(g["name"], last) == last:
                waiting.append(f"{g['name']} (evaluated once, at {last})")
        if waiting:
            raise CheckFailed("waiting for a second evaluation of " + ", ".join(waiting))
        return loaded

    loaded = poll("two evaluation rounds of every rule group", TIMEOUT, 0.5, attempt)

    problems, states = [], []
    for (gname, want_rules), g in zip(want, loaded):
        got = [(r["type"], r["name"]) for r in g["rules"]]
        if got != want_rules:
            missing = [r for r in want_rules if r not in got]
            extra = [r for r in got if r not in want_rules]
            problems.append(f"group {gname}: rules differ; missing {missing}, unexpected {extra}")
        for r in g["rules"]:
            if r.get("health") != "ok" or r.get("lastError"):
                problems.append(
                    f"group {gname}, {r['type']} rule {r['name']}: health {r.get('health')!r}, "
                    f"lastError {r.get('lastError')!r}, query {r.get('query')!r}"
                )
            if r["type"] == "alerting" and r.get("state") != "inactive":
                states.append(f"{r['name']} {r['state']}")
        log(
            f"group {gname}: {len(g['rules'])} rules loaded, evaluated every {g['interval']:g} s, "
            f"last round {g['evaluationTime'] * 1000:.1f} ms"
        )

    # Prometheus's own count of failed evaluations, per group (key "file;group").
    status, body = http_get(f"{PROMETHEUS_URL}/metrics")
    if status != 200:
        problems.append(f"Prometheus's /metrics: HTTP {status}")
    for gname, _ in want:
        key = f"{rules_file};{gname}"
        m = re.search(
            r'^prometheus_rule_evaluation_failures_total\{rule_group="' + re.escape(key) + r'"\} (\S+)$',
            body,
            re.M,
        )
        if not m:
            problems.append(f"no prometheus_rule_evaluation_failures_total for group {key}")
        elif float(m.group(1)) != 0:
            problems.append(f"prometheus_rule_evaluation_failures_total{{rule_group={key!r}}} = {m.group(1)}")

    if problems:
        raise CheckFailed("\n  ".join(["rules of " + rules_file + ":", *problems]))
    log("every rule healthy, no lastError, prometheus_rule_evaluation_failures_total 0")
    log("alerts not inactive: " + (", ".join(states) if states else "none"))


if __name__ == "__main__":
    main({"target": target, "counts": counts, "rules": rules})
