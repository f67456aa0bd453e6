"""HTML building blocks for report.html and `lmtune compare --html`: one inline stylesheet, escaped
tables, and number formatting shared with the terminal and markdown tables. No JavaScript and no
external resources: the page reads the same offline, in a mail attachment or a CI artifact.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #dde;
     padding-bottom: .2em; } .muted { color: #667; }
table { border-collapse: collapse; margin: .6em 0; font-size: 14px; }
th, td { border: 1px solid #d5d9e2; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f2f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: .7em; margin: 1em 0; }
.card { border: 1px solid #d5d9e2; border-radius: 6px; padding: .5em .9em; min-width: 9em; }
.card .k { color: #667; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 1.25em; font-weight: 600; }
.badge { display: inline-block; padding: .1em .6em; border-radius: 1em; font-weight: 600; color: #fff; }
.ok { background: #2e7d32; } .warning { background: #d98e04; } .forgotten { background: #c62828; }
.none { background: #8a8f99; }
img.plot { max-width: 100%; border: 1px solid #e3e6ec; margin: .4em 0; }
pre, td.text { white-space: pre-wrap; word-break: break-word; font: 13px/1.35 ui-monospace, Menlo,
       Consolas, monospace; } pre { background: #f6f7f9; padding: .7em; border-radius: 4px; }
details summary { cursor: pointer; color: #345; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          text_cols: Sequence[int] = ()) -> str:
    """An escaped HTML table; columns in `numeric` are right-aligned, `text_cols` keep whitespace."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else (' class="text"' if i in text_cols else "")
            cells.append(f"<td{cls}>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Sequence[tuple[str, str]]) -> str:
    inner = "".join(f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div></div>'
                    for k, v in items)
    return f'<div class="cards">{inner}</div>'


def badge(verdict: str | None) -> str:
    name = verdict if verdict in ("ok", "warning", "forgotten") else "none"
    return f'<span class="badge {name}">{esc(verdict or "not checked")}</span>'


def img(png_base64: str, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{png_base64}">'


# ---------------------------------------------------------------- number formatting

def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_params(n: Any) -> str:
    if missing(n):
        return "-"
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{int(n)}"


def fmt_seconds(s: Any) -> str:
    if missing(s):
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def fmt_mb(mb: Any) -> str:
    if missing(mb):
        return "-"
    mb = float(mb)
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def fmt_num(x: Any, digits: int = 4) -> str:
    if missing(x):
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def fmt_pct(x: Any) -> str:
    """A fraction in [0, 1] as a percentage."""
    return "-" if missing(x) else f"{100 * float(x):.1f}%"
