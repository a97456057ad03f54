#!/usr/bin/env python3
"""A picture of the Grafana dashboard drawn from its own queries, answered by a real Prometheus.

Grafana cannot be installed where this project is built, so this sends every expression of every panel of
the dashboard to Prometheus, as Grafana would, and draws the answers with matplotlib in the dashboard's
grid. Any expression that Prometheus rejects fails the run. The picture says what it is in its footer.

  dashboard_preview.py [--dashboard FILE] [--out PNG] [--width PX] [--start T --end T] [--note TEXT]

Environment: PROMETHEUS_URL (required); E2E_ARTIFACTS (the default --out is $E2E_ARTIFACTS/dashboard.png);
E2E_TIMEOUT (seconds to wait for --min-scrapes scrapes, default 60). Needs matplotlib (the e2e check
installs the pinned version); the rest is the standard library.

Time range: from the earliest `up` sample Prometheus holds (looking back --lookback) to the latest, unless
--start/--end (Unix seconds or RFC 3339) say otherwise. At least --min-scrapes scrapes (default 3) must
exist; the script waits for them.

Grafana's variables are substituted as Grafana does for that time range:
  $tenant, ${tenant}, ${tenant:fmt}, [[tenant]]: a dashboard variable with its default selection. The shipped
      `tenant` (query, includeAll, allValue ".*", nothing saved as current) defaults to All, i.e. ".*".
      Without an allValue, All is the regex alternation of the values its label_values() query finds;
      a variable without includeAll takes its first value. ${datasource} is the Prometheus asked.
  $__interval, $__interval_ms: the range divided by the panel's maxDataPoints (default: its width in pixels
      here), rounded as Grafana rounds it, and at least the scrape interval (the "Scrape interval" a
      Grafana data source should be configured with). It is also the query step.
  $__rate_interval: max($__interval + scrape interval, 4 x scrape interval), Grafana's definition: 8s with
      2 s scrapes, 20s with 5 s scrapes.
  $__range, $__range_s, $__range_ms, $__from, $__to: the time range.
  The scrape interval is Prometheus's own for its targets (--scrape-interval overrides it).

Queries, as Grafana's Prometheus data source sends them: a range query (start and end aligned down to the
step) for each target of a time series, stat, gauge or bar gauge panel; an instant query at the end for a
target marked `instant` and for table panels. Stat, gauge and bar gauge panels reduce each series with
their reduceOptions.calcs (Grafana's default: lastNotNull). Hidden targets are sent too (their
expressions checked) but not drawn.

Drawing: time series as lines (stacked and filled when the panel stacks), legends from legendFormat
(`{{label}}`; a missing label renders as its name, as in Grafana); stat panels as big numbers coloured by
the panel's thresholds (Grafana's default when none: green, red from 80) with a sparkline; bar gauges as
bars; tables as text. A query with no samples draws "no data"; units s, ms, percentunit, percent, reqps,
bytes and short are formatted. Series are ordered by their labels and coloured in Grafana's classic
palette, so the same data gives the same picture.

Exit 0: drawn. 1: a query failed (each listed with its panel, refId, the expression as sent and
Prometheus's error; no picture is written), or Prometheus could not be read. 2: usage.
"""

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FOOTER = (
    "Rendered from {path}'s queries against a real Prometheus scraping `miaudit demo`; "
    "drawn with matplotlib, not by Grafana."
)

# Grafana's classic palette (the default "palette-classic" of time series), in its order.
PALETTE = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
]
# Grafana's named colours, the darker shades (legible on white).
NAMED = {
    "green": "#37872D", "red": "#C4162A", "yellow": "#CC9D00", "orange": "#E55400", "blue": "#1F60C4",
    "purple": "#8F3BB8", "text": "#24292E", "transparent": "#FFFFFF",
}
DEFAULT_THRESHOLDS = [{"color": "green", "value": None}, {"color": "red", "value": 80}]
GRID_COLS = 24
BG, PANEL_BG, BORDER, TEXT, MUTED = "#F4F5F5", "#FFFFFF", "#D8D9DA", "#24292E", "#6E7681"


class Failed(Exception):
    pass


def log(msg):
    print(f"  {msg}", flush=True)


# --- Prometheus ------------------------------------------------------------------------------------


class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, path, params=None, post=False):
        """(ok, data or (errorType, error), warnings) of an API call; Failed when nothing usable answered."""
        url = f"{self.url}{path}"
        body = None
        if params and post:
            body = urllib.parse.urlencode(params).encode()
        elif params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        req = urllib.request.Request(url, data=body, headers={"Accept": "application/json"})
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            raise Failed(f"{url}: {e}") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise Failed(f"{url}: not JSON: {text[:300]}") from None
        if doc.get("status") == "success":
            return True, doc.get("data"), doc.get("warnings") or []
        return False, (doc.get("errorType", "?"), doc.get("error", text[:300])), doc.get("warnings") or []

    def must(self, path, params=None):
        ok, data, _ = self.call(path, params)
        if not ok:
            raise Failed(f"{path} {params or ''}: {data[0]}: {data[1]}")
        return data


def parse_duration(s):
    """Seconds of a Prometheus duration (5s, 1m30s, 500ms)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", s)
    if not parts or "".join(a + b for a, b in parts) != s:
        raise ValueError(f"not a duration: {s!r}")
    return sum(float(a) * units[b] for a, b in parts)


def prom_duration(seconds):
    """A Prometheus duration for a number of seconds, as Grafana writes intervals (8s, 1m, 2h, 500ms)."""
    ms = int(round(seconds * 1000))
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def scrape_interval(prom):
    data = prom.must("/api/v1/targets", {"state": "active"})
    found = [parse_duration(t["scrapeInterval"]) for t in data.get("activeTargets", []) if t.get("scrapeInterval")]
    if found:
        return max(found)
    cfg = prom.must("/api/v1/status/config").get("yaml", "")
    m = re.search(r"^global:\n(?:\s+.*\n)*?\s+scrape_interval:\s*(\S+)", cfg, re.M)
    return parse_duration(m.group(1)) if m else 15.0  # Grafana's default


def scrape_span(prom, lookback):
    """(earliest, latest sample time, most scrapes of one target) of `up` in the last `lookback` seconds."""
    ok, data, _ = prom.call("/api/v1/query", {"query": f"up[{prom_duration(lookback)}]"})
    if not ok:
        raise Failed(f"up[{prom_duration(lookback)}]: {data[0]}: {data[1]}")
    series = data.get("result", [])
    stamps = [float(v[0]) for s in series for v in s.get("values", [])]
    if not stamps:
        return None, None, 0
    return min(stamps), max(stamps), max(len(s.get("values", [])) for s in series)


def parse_time(s):
    try:
        return float(s)
    except ValueError:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# --- Grafana's intervals and variables ---------------------------------------------------------------

# Grafana's kbn.roundInterval: (below this many ms, this interval in ms).
ROUND_INTERVAL = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
    (32400000, 21600000), (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
    (3628800000, 2592000000),
]


def round_interval(ms):
    for below, value in ROUND_INTERVAL:
        if ms < below:
            return value
    return 31536000000


def panel_interval(range_s, max_data_points, scrape_s):
    """$__interval in seconds: Grafana's calculateInterval with the scrape interval as lower limit."""
    return max(round_interval(range_s * 1000 / max(1, max_data_points)) / 1000, scrape_s)


def regex_escape(v):
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v)


def resolve_variables(dash, prom, start, end):
    """{name: (value as substituted, description)} of the dashboard's variables at their default selection."""
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        name, kind = v.get("name"), v.get("type")
        if kind == "datasource":
            out[name] = ("prometheus", "the Prometheus asked")
            continue
        if kind in ("constant", "textbox"):
            q = v.get("query", "")
            out[name] = (q, repr(q))
            continue
        values = []
        if kind == "custom":
            values = [x.strip() for x in str(v.get("query", "")).split(",") if x.strip()]
        elif kind == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or v.get("definition", ""))
            m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*", q)
            if not m:
                if v.get("includeAll") and v.get("allValue"):
                    out[name] = (v["allValue"], f"All ({v['allValue']})")
                    continue
                raise Failed(f"variable {name}: query {q!r} is not label_values(...); cannot resolve it")
            params = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
            if m.group(1):
                params["match[]"] = m.group(1)
            values = sorted(prom.must(f"/api/v1/label/{m.group(2)}/values", params))
        else:
            raise Failed(f"variable {name}: type {kind!r} is not supported by this preview")
        cur = (v.get("current") or {}).get("value")
        cur = cur if isinstance(cur, list) else ([cur] if cur else [])
        found = f"{len(values)} value(s) found: {', '.join(values) or 'none'}"
        if v.get("includeAll") and (not cur or "$__all" in cur):
            if v.get("allValue"):
                out[name] = (v["allValue"], f"All ({v['allValue']}; {found})")
            else:
                out[name] = ("(" + "|".join(regex_escape(x) for x in values) + ")", f"All ({found})")
        elif cur:
            out[name] = (cur[0] if len(cur) == 1 else "(" + "|".join(map(regex_escape, cur)) + ")", "saved selection")
        elif values:
            out[name] = (values[0], f"its first value ({found})")
        else:
            raise Failed(f"variable {name}: no value found and no All option")
    return out


VAR_RE = re.compile(r"\$\{(\w+)(?::[\w-]+)?\}|\[\[(\w+)(?::[\w-]+)?\]\]|\$(\w+)")


def substitute(expr, values):
    """expr with Grafana's variables replaced; (text, names left as they were: unknown to Grafana too)."""
    unknown = []

    def rep(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        if not name[0].isdigit():  # $1 in label_replace is Prometheus's, not a variable
            unknown.append(name)
        return m.group(0)

    return VAR_RE.sub(rep, expr), unknown


# --- the dashboard's panels and queries -------------------------------------------------------------


def flat_panels(dash):
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        if p.get("type") == "row":
            out.extend(p.get("panels", []))  # a collapsed row's panels: queried, drawn under the row
    return out


def legend(legend_format, metric, expr):
    labels = dict(metric)
    if legend_format and legend_format.strip() and legend_format != "__auto":
        return re.sub(r"\{\{\s*(.+?)\s*\}\}", lambda m: labels.get(m.group(1)) or m.group(1), legend_format)
    name = labels.pop("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else (name or expr)


def run_queries(panels, prom, values, start, end, scrape_s, px_width, problems, failures):
    """Sends every target of every panel; fills each panel's "_series" and "_meta"."""
    for p in panels:
        p["_series"], p["_meta"] = [], {}
        targets = p.get("targets") or []
        if p.get("type") == "row" or not targets:
            continue
        rng = end - start
        mdp = p.get("maxDataPoints") or max(100, int(px_width(p)))
        interval = panel_interval(rng, mdp, scrape_s)
        if p.get("interval"):  # a panel's min interval
            sub_iv, _ = substitute(p["interval"], {})
            try:
                interval = max(interval, parse_duration(sub_iv.lstrip(">")))
            except ValueError:
                pass
        rate_iv = max(interval + scrape_s, 4 * scrape_s)
        builtins = {
            "__interval": prom_duration(interval),
            "__interval_ms": str(int(interval * 1000)),
            "__rate_interval": prom_duration(rate_iv),
            "__rate_interval_ms": str(int(rate_iv * 1000)),
            "__range": f"{int(round(rng))}s",
            "__range_s": str(int(round(rng))),
            "__range_ms": str(int(round(rng * 1000))),
            "__from": str(int(start * 1000)),
            "__to": str(int(end * 1000)),
        }
        allv = {**{k: v[0] for k, v in values.items()}, **builtins}
        step = interval
        a_start, a_end = math.floor(start / step) * step, math.floor(end / step) * step
        p["_meta"] = {"interval": builtins["__interval"], "rate_interval": builtins["__rate_interval"]}
        instant_panel = p.get("type") == "table"
        for t in targets:
            raw = t.get("expr")
            if not raw:
                problems.append(f'panel "{p.get("title")}" refId {t.get("refId")}: no expr')
                continue
            expr, unknown = substitute(raw, allv)
            if unknown:
                problems.append(
                    f'panel "{p.get("title")}" refId {t.get("refId")}: variable(s) {", ".join(unknown)} '
                    "unknown to the dashboard (left as they are, as Grafana would)"
                )
            instant = instant_panel or (t.get("instant") and not t.get("range"))
            if instant:
                ok, data, warns = prom.call("/api/v1/query", {"query": expr, "time": f"{a_end:.3f}"}, post=True)
            else:
                params = {"query": expr, "start": f"{a_start:.3f}", "end": f"{a_end:.3f}", "step": f"{step:g}"}
                ok, data, warns = prom.call("/api/v1/query_range", params, post=True)
            for w in warns:
                problems.append(f'panel "{p.get("title")}" refId {t.get("refId")}: Prometheus warns: {w}')
            if not ok:
                failures.append((p, t, expr, f"{data[0]}: {data[1]}"))
                continue
            result = data.get("result", [])
            if data.get("resultType") == "scalar":
                result = [{"metric": {}, "value": result}]
            elif data.get("resultType") == "string":
                result = []
            got = []
            for s in result:
                pts = s.get("values") or ([s["value"]] if "value" in s else [])
                got.append(
                    {
                        "metric": s.get("metric", {}),
                        "t": [float(x[0]) for x in pts],
                        "v": [float(x[1]) for x in pts],  # NaN, +Inf and -Inf read as such
                        "legend": legend(t.get("legendFormat"), s.get("metric", {}), expr),
                        "hide": bool(t.get("hide")),
                        "refId": t.get("refId"),
                    }
                )
            got.sort(key=lambda s: sorted(s["metric"].items()))
            p["_series"].extend(got)


# --- formatting -------------------------------------------------------------------------------------


def g3(x):
    """Up to 3 significant digits, no exponent for ordinary sizes, no trailing zeros."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    s = f"{x:.3g}"
    if "e" in s:
        s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s


def fmt(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    unit = unit or "short"
    if unit in ("s", "ms"):
        s = v / 1000 if unit == "ms" else v
        a = abs(s)
        if a == 0:
            return "0 s"
        if a < 1:
            return f"{g3(s * 1000)} ms"
        for name, n, nxt in (("s", 1, 60), ("min", 60, 3600), ("hour", 3600, 86400), ("day", 86400, 604800),
                             ("week", 604800, 31536000)):
            if a < nxt:
                return f"{g3(s / n)} {name}"
        return f"{g3(s / 31536000)} year"
    if unit == "percentunit":
        return f"{g3(v * 100)}%"
    if unit == "percent":
        return f"{g3(v)}%"
    if unit == "reqps":
        return f"{g3(v)} req/s"
    if unit in ("bytes", "decbytes"):
        for name, n in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= n:
                return f"{g3(v / n)} {name}"
        return f"{g3(v)} B"
    for name, n in ((" Bil", 1e9), (" Mil", 1e6), (" K", 1e3)):
        if abs(v) >= n:
            return f"{g3(v / n)}{name}"
    return str(int(v)) if v == int(v) else g3(v)


def reduce_values(vals, calc):
    xs = [v for v in vals if not math.isnan(v)]
    if calc in ("lastNotNull", "last"):
        return (xs[-1] if xs else None) if calc == "lastNotNull" else (vals[-1] if vals else None)
    if calc in ("firstNotNull", "first"):
        return (xs[0] if xs else None) if calc == "firstNotNull" else (vals[0] if vals else None)
    if not xs:
        return None
    return {"mean": sum(xs) / len(xs), "max": max(xs), "min": min(xs), "sum": sum(xs), "count": len(xs),
            "range": max(xs) - min(xs), "delta": xs[-1] - xs[0], "diff": xs[-1] - xs[0]}.get(calc, xs[-1])


def threshold_color(v, fc):
    steps = ((fc.get("defaults") or {}).get("thresholds") or {}).get("steps") or DEFAULT_THRESHOLDS
    color = steps[0].get("color", "green")
    for s in steps[1:]:
        if v is not None and s.get("value") is not None and v >= s["value"]:
            color = s.get("color", color)
    return NAMED.get(color, color if str(color).startswith("#") else NAMED["text"])


# --- drawing ----------------------------------------------------------------------------------------


def time_locator(mdates, tz, span, panel_px):
    """Ticks every 1 s ... 1 d, the finest giving at most one tick per 110 pixels of the panel."""
    most = max(2, int(panel_px // 110))
    for secs in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / secs <= most:
            break
    if secs < 60:
        return mdates.SecondLocator(bysecond=range(0, 60, secs), tz=tz)
    if secs < 3600:
        return mdates.MinuteLocator(byminute=range(0, 60, secs // 60), tz=tz)
    if secs < 86400:
        return mdates.HourLocator(byhour=range(0, 24, secs // 3600), tz=tz)
    return mdates.DayLocator(tz=tz)


def draw(dash, panels, values, start, end, scrape_s, prom_version, out, width, row_px, note, dash_label):
    import io

    import matplotlib
    from PIL import Image

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Rectangle
    from matplotlib.textpath import TextToPath
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    matplotlib.rcParams.update({"font.family": "DejaVu Sans", "axes.unicode_minus": False})  # matplotlib's own font
    dpi = 100
    measure = TextToPath()

    def text_px(s, size, weight="normal", family="DejaVu Sans"):  # the width of a text in pixels
        font = FontProperties(size=size, weight=weight, family=family)
        return measure.get_text_width_height_descent(s, font, ismath=False)[0] * dpi / 72

    def wrap(s, size, px):
        lines = []
        for word in s.split():
            if lines and text_px(lines[-1] + " " + word, size) < px:
                lines[-1] += " " + word
            else:
                lines.append(word)
        return lines

    margin, gap = 12, 8
    utc = dt.timezone.utc

    def fmt_t(t):
        return dt.datetime.fromtimestamp(t, utc).strftime("%Y-%m-%d %H:%M:%S")

    varline = "; ".join(f"{k} = {d}" for k, (_, d) in values.items() if k != "datasource")
    subs = wrap(
        f"{fmt_t(start)} to {fmt_t(end)[11:]} UTC ({prom_duration(round(end - start))}), scrape interval "
        f"{prom_duration(scrape_s)}, {prom_version}.  Variables: {varline or 'none'}.",
        10,
        width - 2 * margin,
    )
    header = 64 + 15 * len(subs)
    notes = wrap(note, 9.5, width - 2 * margin)
    footer = 44 + 15 * len(notes)
    bottom = max((p.get("gridPos", {}).get("y", 0) + p.get("gridPos", {}).get("h", 8) for p in panels), default=0)
    height = header + bottom * row_px + footer
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BG)
    col = (width - 2 * margin + gap) / GRID_COLS
    W, H = float(width), float(height)

    def rect(x, y, w, h):  # pixels from the top left -> figure fraction (left, bottom, width, height)
        return [x / W, 1 - (y + h) / H, w / W, h / H]

    def text(x, y, s, **kw):
        kw.setdefault("color", TEXT)
        fig.text(x / W, 1 - y / H, s, parse_math=False, **kw)

    text(margin, 14, dash.get("title", "dashboard"), fontsize=19, fontweight="bold", va="top")
    for i, line in enumerate(subs):
        text(margin, 46 + 15 * i, line, fontsize=10, color=MUTED, va="top")

    def ts_axes(x0, y0, w, h):
        ax = fig.add_axes(rect(x0, y0, w, h))
        ax.set_facecolor(PANEL_BG)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color(BORDER)
        ax.tick_params(labelsize=8.5, colors=MUTED, length=3)
        ax.grid(True, color="#ECECEC", linewidth=0.8)
        ax.set_axisbelow(True)
        return ax

    t0, t1 = dt.datetime.fromtimestamp(start, utc), dt.datetime.fromtimestamp(end, utc)
    for p in panels:
        g = p.get("gridPos", {})
        x0 = margin + g.get("x", 0) * col
        y0 = header + g.get("y", 0) * row_px
        pw, ph = g.get("w", 12) * col - gap, g.get("h", 8) * row_px - gap
        kind = p.get("type")
        if kind == "row":
            text(x0, y0 + 6, p.get("title", ""), fontsize=13, fontweight="bold", va="top")
            continue
        fig.patches.append(Rectangle((x0 / W, 1 - (y0 + ph) / H), pw / W, ph / H, transform=fig.transFigure,
                                     facecolor=PANEL_BG, edgecolor=BORDER, linewidth=1, zorder=-10))
        text(x0 + 10, y0 + 8, p.get("title", ""), fontsize=11.5, fontweight="bold", va="top")
        cx, cy, cw, ch = x0 + 10, y0 + 32, pw - 20, ph - 40  # content box
        fc = p.get("fieldConfig") or {}
        unit = (fc.get("defaults") or {}).get("unit")
        series = [s for s in p.get("_series", []) if not s["hide"]]

        def nodata():
            text(x0 + pw / 2, y0 + 32 + ch / 2, "No data", fontsize=14, color=MUTED, ha="center", va="center")

        if kind in ("timeseries", "graph"):
            drawn = [s for s in series if any(not math.isnan(v) for v in s["v"])]
            if not drawn:
                nodata()
                continue
            stacking = (((fc.get("defaults") or {}).get("custom") or {}).get("stacking") or {}).get("mode", "none")
            fill = (((fc.get("defaults") or {}).get("custom") or {}).get("fillOpacity") or 0) / 100
            labels = [s["legend"] for s in drawn]
            item_w = max(text_px(lbl, 9) for lbl in labels) + 40  # the handle and the spacing
            ncol = max(1, min(len(labels), int(cw // item_w)))
            rows = math.ceil(len(labels) / ncol)
            max_rows = max(1, int(ch * 0.45 // 17))  # Grafana scrolls a longer legend: here it is cut
            shown = len(labels) if rows <= max_rows else max_rows * ncol - 1
            rows = min(rows, max_rows)
            leg_h = rows * 17 + 4
            ax = ts_axes(cx + 58, cy + 4, cw - 62, ch - leg_h - 26)
            times = sorted({t for s in drawn for t in s["t"]})
            idx = {t: i for i, t in enumerate(times)}
            xs = [dt.datetime.fromtimestamp(t, utc) for t in times]
            base = [0.0] * len(times)
            for i, s in enumerate(drawn):
                colr = PALETTE[i % len(PALETTE)]
                ys = [math.nan] * len(times)
                for t, v in zip(s["t"], s["v"]):
                    ys[idx[t]] = v
                if stacking == "normal":
                    top = [b + v if not math.isnan(v) else math.nan for b, v in zip(base, ys)]
                    lower = [b if not math.isnan(v) else math.nan for b, v in zip(base, ys)]
                    ax.fill_between(xs, lower, top, color=colr, alpha=fill or 0.3, linewidth=0, step=None)
                    ax.plot(xs, top, color=colr, linewidth=1.4, label=s["legend"])
                    base = [b + (0 if math.isnan(v) else v) for b, v in zip(base, ys)]
                    plotted = top
                else:
                    if fill:
                        ax.fill_between(xs, 0, ys, color=colr, alpha=fill, linewidth=0)
                    ax.plot(xs, ys, color=colr, linewidth=1.4, label=s["legend"])
                    plotted = ys
                # isolated points (a value between gaps) are drawn as dots, as Grafana does
                iso = [k for k, v in enumerate(plotted) if not math.isnan(v)
                       and (k == 0 or math.isnan(plotted[k - 1])) and (k == len(plotted) - 1 or math.isnan(plotted[k + 1]))]
                if iso:
                    ax.plot([xs[k] for k in iso], [plotted[k] for k in iso], "o", color=colr, markersize=3.5)
            ax.set_xlim(t0, t1)
            lo, hi = ax.get_ylim()
            finite = [v for s in drawn for v in s["v"] if not math.isnan(v)]
            if finite and min(finite) == max(finite):  # a flat line: at the bottom for 0, else in the middle
                v = finite[0]
                lo, hi = (0, 1) if v == 0 else (v - abs(v) * 0.5, v + abs(v) * 0.5)
            if stacking == "normal" or min(finite) >= 0:
                lo = min(0, lo)
            ax.set_ylim(lo - (0.02 * (hi - lo) if lo == 0 else 0), hi)  # a line at 0 stays above the axis
            ax.xaxis.set_major_locator(time_locator(mdates, utc, end - start, pw))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if end - start > 300 else "%H:%M:%S", tz=utc))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: fmt(v, u)))
            handles, lbls = ax.get_legend_handles_labels()
            handles, lbls = handles[:shown], lbls[:shown]
            if shown < len(labels):
                handles.append(Rectangle((0, 0), 0, 0, visible=False))
                lbls.append(f"... {len(labels) - shown} more")
            lgd = ax.legend(handles, lbls, loc="upper left", ncol=ncol, frameon=False, fontsize=9,
                            bbox_to_anchor=((cx - (cx + 58)) / (cw - 62), -22 / (ch - leg_h - 26)),
                            handlelength=1.6, columnspacing=1.4, borderaxespad=0, labelcolor=TEXT)
            for t_ in lgd.get_texts():
                t_.set_parse_math(False)
        elif kind in ("stat", "gauge"):
            ro = (p.get("options") or {}).get("reduceOptions") or {}
            calc = (ro.get("calcs") or ["lastNotNull"])[0]
            vals = [(s, reduce_values(s["v"], calc)) for s in series]
            vals = [(s, v) for s, v in vals if v is not None]
            if not vals:
                nodata()
                continue
            n = len(vals)
            spark = (p.get("options") or {}).get("graphMode", "area") != "none"
            cellw = cw / n
            for i, (s, v) in enumerate(vals):
                colr = threshold_color(v, fc)
                txt = fmt(v, unit)
                sx = cx + i * cellw
                if spark and len(s["t"]) > 1:
                    ax = fig.add_axes(rect(sx, cy + ch * 0.55, cellw, ch * 0.45))
                    ax.set_axis_off()
                    xs = [dt.datetime.fromtimestamp(t, utc) for t in s["t"]]
                    floor = min((v_ for v_ in s["v"] if not math.isnan(v_)), default=0)
                    ax.fill_between(xs, floor, s["v"], color=colr, alpha=0.12, linewidth=0)
                    ax.plot(xs, s["v"], color=colr, linewidth=1.2, alpha=0.6)
                    ax.set_xlim(t0, t1)
                size_px = min(ch * 0.55, 0.8 * cellw / text_px(txt, 72 / dpi, "bold"))  # a 1 px font's width
                name_h = 0
                if n > 1:
                    text(sx + cellw / 2, cy + 2, s["legend"], fontsize=9, color=MUTED, ha="center", va="top")
                    name_h = 14
                text(sx + cellw / 2, cy + name_h + (ch - name_h) * 0.42, txt, fontsize=size_px * 72 / dpi,
                     fontweight="bold", color=colr, ha="center", va="center")
        elif kind == "bargauge":
            ro = (p.get("options") or {}).get("reduceOptions") or {}
            calc = (ro.get("calcs") or ["lastNotNull"])[0]
            vals = [(s["legend"], reduce_values(s["v"], calc)) for s in series]
            vals = [(lbl, v) for lbl, v in vals if v is not None]
            if not vals:
                nodata()
                continue
            ax = ts_axes(cx + 150, cy, cw - 160, ch)
            ax.barh(range(len(vals)), [v for _, v in vals],
                    color=[threshold_color(v, fc) for _, v in vals])
            ax.set_yticks(range(len(vals)), [lbl for lbl, _ in vals])
            ax.invert_yaxis()
            top = max(v for _, v in vals)
            if min(v for _, v in vals) >= 0:
                ax.set_xlim(0, top * 1.15 if top > 0 else 1)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: fmt(v, u)))
            for k, (_, v) in enumerate(vals):
                ax.text(v, k, " " + fmt(v, unit), va="center", fontsize=9, color=TEXT, parse_math=False)
        elif kind == "table":
            if not series:
                nodata()
                continue
            keys = sorted({k for s in series for k in s["metric"]})
            rows = [[s["metric"].get(k, "") for k in keys] + [fmt(s["v"][-1] if s["v"] else None, unit)] for s in series]
            head = keys + ["Value"]
            line_h = 16
            colw = [max(text_px(str(r[i]), 9, "bold", "DejaVu Sans Mono") for r in [head, *rows]) * 1.1 + 16
                    for i in range(len(head))]
            for r_i, r in enumerate([head, *rows][: int(ch // line_h)]):
                xx = cx
                for c_i, cell in enumerate(r):
                    text(xx, cy + r_i * line_h, str(cell), fontsize=9, va="top",
                         fontweight="bold" if r_i == 0 else "normal", family="DejaVu Sans Mono")
                    xx += colw[c_i]
        elif kind == "text":
            content = (p.get("options") or {}).get("content", "")
            text(cx, cy, content[:2000], fontsize=9.5, va="top", wrap=True)
        else:
            text(x0 + pw / 2, y0 + 32 + ch / 2, f"(panel type {kind!r} is not drawn by this preview)",
                 fontsize=10, color=MUTED, ha="center", va="center")

    fy = header + bottom * row_px + 6
    text(margin, fy, FOOTER.format(path=dash_label), fontsize=11, fontweight="bold", va="top")
    for i, line in enumerate(notes):
        text(margin, fy + 24 + i * 15, line, fontsize=9.5, color=MUTED, va="top")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Through Pillow (a dependency of matplotlib): 256 colours, no dithering, no metadata: a third of the
    # size, and the same bytes for the same answers.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=BG, metadata={"Software": None})
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)


# --- main -------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dashboard", default=os.path.join(REPO, "deploy/grafana/miaudit-dashboard.json"))
    ap.add_argument("--out", default=None, help="PNG to write (default $E2E_ARTIFACTS/dashboard.png)")
    ap.add_argument("--width", type=int, default=1600, help="picture width in pixels (default 1600)")
    ap.add_argument("--row-px", type=int, default=40, help="pixels of one grid row (Grafana: 30 + 8 margin)")
    ap.add_argument("--start", help="range start (Unix seconds or RFC 3339); default: the earliest sample")
    ap.add_argument("--end", help="range end; default: the latest sample")
    ap.add_argument("--lookback", default="6h", help="how far back to look for samples (default 6h)")
    ap.add_argument("--min-scrapes", type=int, default=3)
    ap.add_argument("--scrape-interval", help="override the scrape interval read from Prometheus")
    ap.add_argument("--note", default="", help="a second footer line (what was done during the recording)")
    a = ap.parse_args()
    prom_url = os.environ.get("PROMETHEUS_URL")
    if not prom_url:
        print("dashboard_preview.py: set PROMETHEUS_URL", file=sys.stderr)
        sys.exit(2)
    out = a.out or os.path.join(os.environ.get("E2E_ARTIFACTS") or ".", "dashboard.png")
    try:
        with open(a.dashboard, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAILED: cannot read the dashboard {a.dashboard}: {e}", flush=True)
        sys.exit(1)
    path = os.path.abspath(a.dashboard)
    dash_label = os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else a.dashboard
    prom = Prom(prom_url)
    try:
        render(a, prom, dash, out, dash_label)
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        if os.path.exists(out):
            os.remove(out)  # no stale picture beside a failure
        sys.exit(1)


def render(a, prom, dash, out, dash_label):
    scrape_s = parse_duration(a.scrape_interval) if a.scrape_interval else scrape_interval(prom)
    lookback = parse_duration(a.lookback)
    deadline = time.monotonic() + float(os.environ.get("E2E_TIMEOUT", "60"))
    while True:
        first, last, n = scrape_span(prom, lookback)
        if n >= a.min_scrapes or a.start:
            break
        if time.monotonic() > deadline:
            raise Failed(f"only {n} scrape(s) of any target in Prometheus; {a.min_scrapes} needed")
        log(f"{n} scrape(s) so far; waiting for {a.min_scrapes}")
        time.sleep(min(scrape_s, 5))
    start = parse_time(a.start) if a.start else first
    end = parse_time(a.end) if a.end else last
    if start is None or end is None or end <= start:
        raise Failed(f"no time range: start {start}, end {end}")
    build = prom.must("/api/v1/status/buildinfo")
    prom_version = f"Prometheus {build.get('version', '?')}"
    values = resolve_variables(dash, prom, start, end)
    panels = flat_panels(dash)
    col = (a.width - 24 + 8) / GRID_COLS
    problems, failures = [], []
    run_queries(panels, prom, values, start, end, scrape_s, lambda p: p.get("gridPos", {}).get("w", 12) * col,
                problems, failures)
    n_queries = sum(len(p.get("targets") or []) for p in panels if p.get("type") != "row")
    log(
        f"{dash_label}: {len(panels)} panels, {n_queries} queries against {prom.url} ({prom_version}), "
        f"{dt.datetime.fromtimestamp(start, dt.timezone.utc):%H:%M:%S}-"
        f"{dt.datetime.fromtimestamp(end, dt.timezone.utc):%H:%M:%S} UTC, scrape interval {prom_duration(scrape_s)}"
    )
    for k, (v, d) in values.items():
        log(f"${k} -> {v}  ({d})")
    for p in panels:
        if p.get("type") == "row" or not p.get("targets"):
            continue
        series = p.get("_series", [])
        data = [s for s in series if any(not math.isnan(v) for v in s["v"])]
        meta = p.get("_meta", {})
        state = f"{len(data)} series with data" if data else "NO DATA"
        log(f'[{p.get("type")}] "{p.get("title")}": {state} (interval {meta.get("interval")}, '
            f'rate interval {meta.get("rate_interval")})')
        seen = {}
        for s in series:
            seen.setdefault((s["refId"], s["legend"]), []).append(s["metric"])
        for (ref, lgd), ms in seen.items():
            if len(ms) > 1:
                problems.append(f'panel "{p.get("title")}" refId {ref}: {len(ms)} series share the legend {lgd!r}')
        for s in series:
            finite = [v for v in s["v"] if not math.isnan(v)]
            nan = len(s["v"]) - len(finite)
            rng = f"{fmt(min(finite), None)}..{fmt(max(finite), None)}" if finite else "-"
            log(f"    {s['refId']} {s['legend']!r}: {len(s['v'])} points, {nan} NaN, range {rng}")
    for pr in problems:
        log(f"note: {pr}")
    if failures:
        lines = [f"{len(failures)} of {n_queries} queries failed:"]
        for p, t, expr, err in failures:
            lines.append(f'panel "{p.get("title")}" (id {p.get("id")}, {p.get("type")}), refId {t.get("refId")}:')
            lines.append(f"    expr as written: {t.get('expr')}")
            lines.append(f"    expr as sent:    {expr}")
            lines.append(f"    Prometheus:      {err}")
        raise Failed("\n  ".join(lines))
    draw(dash, panels, values, start, end, scrape_s, prom_version, out, a.width, a.row_px, a.note, dash_label)
    log(f"every query answered; drew {out}")


if __name__ == "__main__":
    main()
