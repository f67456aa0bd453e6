"""DIR/sweep.html: one offline page for a sweep, in the style of report.html (report_html.py):
the trials table, the metric against each parameter, the pruned trials with their validation-loss
curves, the best config and its test-split score. Plots are matplotlib PNGs embedded as base64.
"""

from __future__ import annotations

from pathlib import Path

from lmtune.report import html as H
from lmtune.report.build import _png
from lmtune.run.layout import write_text
from lmtune.sweep.results import TrialRow, table_cells
from lmtune.sweep.study import SweepSpec

SWEEP_HTML = "sweep.html"
_COLORS = {"complete": "#1f77b4", "pruned": "#d98e04", "fail": "#c62828"}


def plot_param(rows: list[TrialRow], spec: SweepSpec, param) -> str | None:
    """The metric of every complete trial against one parameter (log axis for log ranges,
    categories in the order given)."""
    from matplotlib.figure import Figure

    done = [r for r in rows if r.state == "complete" and param.key in r.params and r.value is not None]
    if not done:
        return None
    fig = Figure(figsize=(4.6, 3.2))
    ax = fig.add_subplot()
    ys = [r.value for r in done]
    if param.kind == "choice":
        labels = [str(c) for c in param.choices]
        xs = [labels.index(str(r.params[param.key])) for r in done]
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    else:
        xs = [r.params[param.key] for r in done]
        if param.log:
            ax.set_xscale("log")
    ax.scatter(xs, ys, color=_COLORS["complete"], zorder=3)
    best = min(done, key=lambda r: r.value) if spec.direction == "minimize" else max(done, key=lambda r: r.value)
    ax.scatter([xs[done.index(best)]], [best.value], s=140, facecolors="none", edgecolors="#2e7d32",
               linewidths=2, zorder=4, label="best")
    ax.set_xlabel(param.key)
    ax.set_ylabel(f"{spec.metric} (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_curves(rows: list[TrialRow], spec: SweepSpec) -> str | None:
    """Validation loss at each evaluation, complete trials in blue, pruned ones in orange."""
    from matplotlib.figure import Figure

    curves = [r for r in rows if r.intermediate and r.state in ("complete", "pruned")]
    if not curves:
        return None
    sign = 1.0 if spec.direction == "minimize" else -1.0   # the study stored -loss when maximising
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    for r in curves:
        steps = sorted(r.intermediate)
        ax.plot(steps, [sign * r.intermediate[s] for s in steps], marker="o", ms=3,
                color=_COLORS[r.state], alpha=0.8)
    for state, color in _COLORS.items():
        if state != "fail":
            ax.plot([], [], color=color, label=state)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def render(rows: list[TrialRow], spec: SweepSpec, best, best_yaml: str | None, test: dict | None,
           notes: list[str]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "fail")}
    best_value = "-" if best is None else (H.fmt_num(best.value) if spec.metric == "eval_loss"
                                           else H.fmt_pct(best.value))
    parts = [f"<h1>lmtune sweep: {H.esc(spec.study_name)}</h1>",
             f'<p class="muted">{H.esc(spec.config)} {H.esc(" ".join(spec.overrides))}; '
             f"{len(rows)} trials selected on <b>{H.esc(spec.metric)}</b> (validation split, "
             f"{spec.direction}); storage {H.esc(spec.storage_shown)}</p>",
             H.cards([("best " + spec.metric, best_value),
                      ("best trial", "-" if best is None else str(best.number)),
                      *((k, str(v)) for k, v in counts.items())])]
    headers, body = table_cells(rows, spec)
    parts += ["<h2>Trials</h2>", H.table(headers, body, numeric=tuple(range(2, len(headers))))]
    plots = [plot_param(rows, spec, p) for p in spec.params]
    parts.append("<h2>Metric against each parameter</h2>")
    parts += [H.img(png, f"{spec.metric} vs {p.key}") for png, p in zip(plots, spec.params) if png] or \
        ['<p class="muted">no complete trial yet</p>']
    parts.append("<h2>Validation loss during training, pruned trials</h2>")
    curves = plot_curves(rows, spec)
    parts.append(H.img(curves, "validation loss per trial") if curves else
                 '<p class="muted">no intermediate validation loss was reported</p>')
    stopped = [[str(r.number), r.state, r.note] for r in rows if r.state in ("pruned", "fail")]
    parts.append(H.table(["trial", "state", "why"], stopped, text_cols=(2,)) if stopped else
                 '<p class="muted">no trial was pruned or failed</p>')
    parts.append("<h2>Best config</h2>")
    parts.append(f"<pre>{H.esc(best_yaml)}</pre>" if best_yaml else '<p class="muted">no complete trial</p>')
    parts.append(_test_section(test))
    parts += [f'<p class="muted">{H.esc(n)}</p>' for n in notes]
    return H.page(f"lmtune sweep {spec.study_name}", "\n".join(parts))


def _test_section(test: dict | None) -> str:
    if not test or not test.get("task"):
        return '<h2>The winner on the test split</h2><p class="muted">not measured (no test split here)</p>'
    t = test["task"]
    rows = [[m, H.fmt_pct((t.get("base") or {}).get(m)), H.fmt_pct(t["tuned"].get(m))] for m in t["metrics"]]
    f = test.get("forgetting") or {}
    forget = f"{H.badge(f.get('verdict'))} x{f['ratio']:.2f}" if f.get("ratio") is not None else "-"
    return (f"<h2>The winner on the test split</h2><p class=\"muted\">{H.esc(t['examples'])} examples from "
            f"{H.esc(t['source'])}; measured once, after selection</p>"
            + H.table(["metric", "base", "tuned"], rows, numeric=(1, 2)) + f"<p>forgetting: {forget}</p>")


def write(path: Path, *args) -> Path:
    write_text(path, render(*args))
    return path
