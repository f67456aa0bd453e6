"""`lmtune compare RUN RUN ...`: several runs side by side, as a terminal table, markdown or HTML.

Columns: method, trainable parameters, peak memory, train time, eval loss, the task's primary metric,
that metric as a percentage of the full fine-tuning run's (the common "LoRA reaches 95-99% of
full" claim, measured; docs/training.md "Full vs LoRA vs QLoRA"), the same metric with retrieved
passages when a run was evaluated with them (+ docs), and the forgetting verdict. Reads only run-directory files (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmtune.report import html as H
from lmtune.report import rag
from lmtune.errors import UserError
from lmtune.report.build import RunData, cfg_get, load_run
from lmtune.report.objective import plot_compare, summary


@dataclass
class Row:
    run: str
    method: str
    trainable_params: int | None
    total_params: int | None
    peak_memory_mb: float | None
    train_seconds: float | None
    eval_loss: float | None
    task: str | None            # scorer name (sql, json, generic)
    metric: str | None          # primary metric name
    value: float | None         # primary metric of the tuned model, a fraction
    base_value: float | None    # same metric for the base model, when evaluated
    forgetting_ratio: float | None
    forgetting: str | None      # ok | warning | forgotten
    pct_of_full: float | None = None
    objective: str = "sft"      # train.objective
    objective_note: str | None = None   # its last logged numbers (report/objective.py)
    rag_value: float | None = None      # primary metric of the tuned model with retrieved passages
    base_rag_value: float | None = None # ... and of the base model with them
    rag_settings: str | None = None     # where the passages came from (docs, top_k)
    metrics: list = field(default_factory=list, repr=False)   # metrics.jsonl rows, for the curves


def row_of(run: RunData) -> Row:
    s, ev = run.summary or {}, run.eval or {}
    val = ((ev.get("validation") or {}).get("tuned") or {}).get("loss", s.get("eval_loss"))
    task = ev.get("task") or {}
    prim = task.get("primary")
    f = ev.get("forgetting") or {}
    objective = cfg_get(run.config, "train.objective", None) or s.get("objective") or "sft"
    return Row(run.name, run.config.get("method") or s.get("method") or "?", s.get("trainable_params"),
               s.get("total_params"), s.get("peak_memory_mb"), s.get("train_seconds"), val,
               task.get("name"), prim, (task.get("tuned") or {}).get(prim),
               (task.get("base") or {}).get(prim), f.get("ratio"), f.get("verdict"),
               objective=objective, objective_note=summary(run.metrics, objective), metrics=run.metrics,
               rag_value=rag.primary(ev)[0], base_rag_value=rag.primary(ev)[1],
               rag_settings=rag.settings_text(ev) if rag.has_rag(ev) else None)


def compare(paths: list[str | Path]) -> tuple[list[Row], list[str]]:
    """Rows in the order given, with % of full filled in; plus notes (missing data, mixed tasks)."""
    if not paths:
        raise UserError("no runs to compare", ["pass two or more run directories"])
    names = [Path(p).name for p in paths]
    rows = [row_of(load_run(p)) for p in paths]
    if len(set(names)) < len(names):     # same dir name under different parents: show the path
        for r, p in zip(rows, paths):
            r.run = str(p)
    notes = []
    for r in rows:
        if r.value is None:
            notes.append(f"{r.run}: no task metric (run `lmtune eval {r.run}` first)")
    keys = {(r.task, r.metric) for r in rows if r.value is not None}
    if len(keys) > 1:
        notes.append("runs were scored on different tasks/metrics: % of full compares only runs with "
                     "the same one")
    for task, metric in keys:
        same = [r for r in rows if (r.task, r.metric) == (task, metric) and r.value is not None]
        full = next((r for r in same if r.method == "full"), None)
        if full is None:
            continue
        if not full.value:
            notes.append(f"{full.run}: the full fine-tune scored 0 on {metric}: no percentage of it")
            continue
        for r in same:
            r.pct_of_full = 100.0 * r.value / full.value
    if not any(r.method == "full" for r in rows):
        notes.append("no full fine-tuning run among these: the '% of full' column is empty")
    notes += [f"{r.run}: {r.objective}, {r.objective_note}" for r in rows if r.objective_note]
    notes += [f"{r.run}: + docs retrieved from {r.rag_settings}" for r in rows if r.rag_settings]
    return rows, notes


# ---------------------------------------------------------------- rendering

def _metric_header(rows: list[Row]) -> str:
    metrics = {r.metric for r in rows if r.metric}
    return metrics.pop() if len(metrics) == 1 else "task metric"


def cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells, shared by the three outputs."""
    headers = ["run", "method", "trainable params", "peak memory", "train time", "eval loss",
               _metric_header(rows), "% of full", "forgetting"]
    single = headers[6] != "task metric"
    docs = any(r.rag_value is not None for r in rows)
    if docs:   # runs evaluated with retrieval: the same metric with the passages, beside it
        headers.insert(7, "+ docs")
    body = []
    for r in rows:
        trainable = H.fmt_params(r.trainable_params)
        if r.trainable_params is not None and r.total_params:
            trainable += f" ({100 * r.trainable_params / r.total_params:.1f}%)"
        metric = H.fmt_pct(r.value)
        if r.value is not None and not single:
            metric = f"{r.task} {r.metric} {metric}"
        if r.base_value is not None:
            metric += f" (base {H.fmt_pct(r.base_value)})"
        pct = "-" if r.pct_of_full is None else f"{r.pct_of_full:.1f}%"
        forget = "-" if r.forgetting is None else f"{r.forgetting} (x{r.forgetting_ratio:.2f})"
        method = r.method if r.objective == "sft" else f"{r.method}, {r.objective}"
        body.append([r.run, method, trainable, H.fmt_mb(r.peak_memory_mb), H.fmt_seconds(r.train_seconds),
                     H.fmt_num(r.eval_loss), metric, pct, forget])
        if docs:
            with_docs = H.fmt_pct(r.rag_value)
            if r.base_rag_value is not None:
                with_docs += f" (base {H.fmt_pct(r.base_rag_value)})"
            body[-1].insert(7, with_docs)
    return headers, body


def to_text(rows: list[Row], notes: list[str]) -> str:
    headers, body = cells(rows)
    widths = [max(len(x) for x in col) for col in zip(headers, *body)]
    line = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out + [f"note: {n}" for n in notes]) + "\n"


def to_markdown(rows: list[Row], notes: list[str]) -> str:
    headers, body = cells(rows)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    return "\n".join(out + [""] + [f"- {n}" for n in notes]) + "\n"


def to_html(rows: list[Row], notes: list[str]) -> str:
    headers, body = cells(rows)
    parts = ["<h1>lmtune: run comparison</h1>", H.table(headers, body, numeric=tuple(range(2, len(headers) - 1)))]
    parts += [f'<p class="muted">{H.esc(n)}</p>' for n in notes]
    png = plot_compare([(r.run, r.objective, r.metrics) for r in rows])
    if png:
        parts.append(H.img(png, "loss and the objectives' own numbers"))
    parts.append('<p class="muted">% of full: the task metric divided by the full fine-tuning run\'s. '
                 "Forgetting: perplexity on general text after / before training.</p>")
    return H.page("lmtune compare", "\n".join(parts))
