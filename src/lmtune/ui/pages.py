"""The UI's HTML pages, rendered on the server from run directories. Tables, the config, data
stats, evaluation and forgetting sections are report/build.py's own; the curves are drawn in the
browser by static/ui.js from /api/runs/NAME/metrics, which it polls every second. No inline
script (the app's Content-Security-Policy forbids it): pages hand data to ui.js in data-attributes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmtune.report import build as B
from lmtune.report import html as H
from lmtune.report.compare import cells, compare
from lmtune.ui.runs import RunSummary, load_light, summarize

# Which metrics.jsonl key each live chart follows (one series per run on /compare).
CHARTS = (("loss", "training loss"), ("eval_loss", "validation loss"), ("learning_rate", "learning rate"),
          ("tokens_per_second", "tokens/s"))


def page(title: str, body: str, runs_dir: Path) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{H.esc(title)}</title>\n<style>{H.CSS}</style>\n"
            f'<link rel="stylesheet" href="/static/ui.css">\n<script src="/static/ui.js" defer></script>\n'
            f'</head>\n<body>\n<nav><a href="/">lmtune ui</a> <a href="/chat">chat</a> <a href="/new">new run</a> '
            f'<span class="muted">{H.esc(runs_dir)}</span></nav>\n'
            f"{body}\n</body>\n</html>\n")


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _td(text: str, sort: object = None, cls: str = "", html: str | None = None) -> str:
    key = "" if sort is None else f' data-sort="{H.esc(sort)}"'
    klass = f' class="{cls}"' if cls else ""
    return f"<td{klass}{key}>{H.esc(text) if html is None else html}</td>"


def status_html(s: RunSummary) -> str:
    out = f'<span class="state {s.status.state}">{s.status.state}</span>'
    out += f' <span class="detail">{H.esc(f"({s.status.detail})" if s.status.detail else "")}</span>'
    if s.status.resume:
        out += f"<br><code>{H.esc(s.status.resume)}</code>"
    return out


def metric_text(s: RunSummary) -> tuple[str, float | None]:
    r = s.row
    if r.value is None:
        return "-", None
    base = H.fmt_pct(r.base_value) + " -> " if r.base_value is not None else ""
    return f"{r.metric}: {base}{H.fmt_pct(r.value)}", r.value


RUN_HEADERS = ("", "run", "status", "method", "objective", "base", "data", "steps", "task metric base -> tuned",
               "forgetting", "train time", "updated")


def runs_row(s: RunSummary) -> str:
    r = s.row
    metric, metric_key = metric_text(s)
    steps = "-" if s.steps is None else str(s.steps) + (f" / {s.max_steps}" if s.max_steps and s.max_steps > 0 else "")
    forget = "-" if r.forgetting is None else f"{r.forgetting} (x{r.forgetting_ratio:.2f})"
    link = f'<a href="/runs/{H.esc(s.name)}">{H.esc(s.name)}</a>'
    pick = f'<input type="checkbox" class="pick" value="{H.esc(s.name)}" aria-label="compare {H.esc(s.name)}">'
    return ("<tr>" + _td("", html=pick) + _td(s.name, s.name, html=link)
            + _td(s.status.state, s.status.state, html=status_html(s))
            + _td(r.method, r.method) + _td(s.objective, s.objective) + _td(s.base, s.base) + _td(s.data, s.data)
            + _td(steps, s.steps if s.steps is not None else -1, "num")
            + _td(metric, metric_key if metric_key is not None else -1, "num")
            + _td(forget, r.forgetting_ratio if r.forgetting_ratio is not None else -1)
            + _td(H.fmt_seconds(r.train_seconds), r.train_seconds if r.train_seconds is not None else -1, "num")
            + _td(_when(s.status.updated), s.status.updated, "num") + "</tr>")


def runs_table(rows: list[RunSummary], table_id: str) -> str:
    head = "".join(f"<th>{H.esc(h)}</th>" for h in RUN_HEADERS)
    return (f'<table id="{H.esc(table_id)}" class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(runs_row(s) for s in rows) + "</tbody></table>")


def sweep_section(name: str, trials: list[RunSummary]) -> str:
    """A sweep's trials under one heading (the sweep's own sweep.html holds its study plots)."""
    done = sum(t.status.state == "finished" for t in trials)
    head = (f'<h2 class="sweep">sweep {H.esc(name)} <span class="muted">{len(trials)} trials, {done} finished'
            f"; <code>lmtune sweep --status</code> and sweep.html in {H.esc(name)}/ hold the study</span></h2>")
    if not trials:
        return head + '<p class="muted">no trial has started yet</p>'
    return head + runs_table(trials, f"sweep-{name}")


def runs_page(runs_dir: Path, rows: list[RunSummary], sweeps: dict[str, list[RunSummary]] | None = None) -> str:
    sweeps = sweeps or {}
    if not rows and not sweeps:
        body = (f"<h1>Runs</h1><p class=\"muted\">No runs under {H.esc(runs_dir)} yet: a run is a directory "
                "with config.yaml, as <code>lmtune train</code> writes it.</p>")
        return page("lmtune ui: runs", body, runs_dir)
    body = (f"<h1>Runs</h1><p class=\"muted\">{len(rows)} runs, {len(sweeps)} sweeps. Click a column to sort; "
            f'tick runs and <button id="compare-picked" type="button">compare</button> them.</p>'
            + runs_table(rows, "runs") + "".join(sweep_section(n, t) for n, t in sweeps.items()))
    return page("lmtune ui: runs", body, runs_dir)


def charts_html(runs: list[str]) -> str:
    names = H.esc(json.dumps(runs))
    boxes = "".join(f'<figure class="chart"><figcaption>{H.esc(title)}</figcaption>'
                    f'<div class="plot" data-key="{key}" data-points="0"></div></figure>' for key, title in CHARTS)
    return f'<section id="charts" data-runs="{names}">{boxes}</section>'


def controls(s: RunSummary, read_only: bool) -> str:
    """Stop (a running run) and resume (a stopped one), for runs directly under RUNS_DIR."""
    if read_only or "/" in s.name:
        return ""
    name = H.esc(s.name)
    return (f'<p id="controls" data-run="{name}"><button type="button" id="stop-run" '
            f'{"" if s.status.state == "running" else "hidden"}>stop (Ctrl-C)</button> '
            f'<button type="button" id="resume-run" {"" if s.status.state == "stopped" else "hidden"}>resume</button> '
            '<span id="action-note" class="muted"></span></p>')


def run_page(runs_dir: Path, root: Path, name: str | None = None, read_only: bool = False) -> str:
    s = summarize(root, name)
    run = load_light(root)
    report = (f'<a href="/runs/{H.esc(s.name)}/report.html">report.html</a>' if (root / B.REPORT_FILE).is_file()
              else f"no report.html yet (<code>lmtune report {H.esc(root)}</code>)")
    weights = next((d for d in ("adapter", "model") if (root / d).is_dir()), None)
    facts = [("status", f'<span id="status">{status_html(s)}</span>'), ("method", H.esc(s.row.method)), ("base", H.esc(s.base)),
             ("data", H.esc(s.data)), ("steps", f'<span id="steps">{H.esc(s.steps if s.steps is not None else "-")}</span>'),
             ("forgetting", H.badge(s.row.forgetting))]
    body = [f"<h1>{H.esc(s.name)}</h1>", H.cards(facts),
            f'<p>{report}. Weights: {H.esc(str(root / weights)) if weights else "not written yet"}. '
            f'Export: <code>lmtune export {H.esc(root)}</code>.</p>', controls(s, read_only),
            "<h2>Training curves</h2>", charts_html([s.name]),
            '<p class="muted" id="live-note">Curves follow metrics.jsonl: polled every second.</p>',
            "<h2>Evaluation: base vs tuned</h2>", B.section_eval(run),
            "<h2>Forgetting check</h2>", B.section_forgetting(run),
            "<h2>Samples</h2>", B.section_samples(run),
            "<h2>Data</h2>", B.section_data(run),
            "<h2>Configuration</h2>", B.section_config(run)]
    return page(f"lmtune ui: {s.name}", "\n".join(body), runs_dir)


def compare_page(runs_dir: Path, roots: list[Path]) -> str:
    rows, notes = compare(roots)
    headers, body = cells(rows)
    table = H.table(headers, body, numeric=tuple(range(2, len(headers) - 1))).replace("<table>", '<table id="compare">', 1)
    parts = [f"<h1>Compare: {H.esc(', '.join(r.name for r in roots))}</h1>",
             "<h2>Metrics</h2>", table]
    parts += [f'<p class="muted">{H.esc(n)}</p>' for n in notes]
    parts.append('<p class="muted">The same table as <code>lmtune compare</code>. % of full: the task metric '
                 "divided by the full fine-tuning run's. Forgetting: perplexity on general text after / before.</p>")
    parts += ["<h2>Curves</h2>", charts_html([r.name for r in roots])]
    return page("lmtune ui: compare", "\n".join(parts), runs_dir)
