"""`lmtune report RUN` -> RUN/report.html: one self-contained page a person can open offline.

It reads only what the run directory holds (config.yaml, data_stats.json, metrics.jsonl,
train_summary.json, eval.json, env.json); plots are drawn with matplotlib's Agg backend and embedded
as base64 PNG. No torch import: reporting works on a machine without the training stack's heavy parts.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune.config import DEFAULT_LR
from lmtune.errors import UserError
from lmtune.report import html as H
from lmtune.report.rag import section as rag_section
from lmtune.report.objective import section_grpo
from lmtune.run.layout import write_text

REPORT_FILE = "report.html"


@dataclass
class RunData:
    root: Path
    config: dict = field(default_factory=dict)
    data_stats: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    summary: dict | None = None
    eval: dict | None = None
    env: dict | None = None

    @property
    def name(self) -> str:
        return self.root.name


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows; a torn last line (killed run) is skipped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_run(path: str | Path) -> RunData:
    root = Path(path)
    if not (root / "config.yaml").is_file():
        raise UserError(f"{root}: not a run directory (no config.yaml)",
                        ["pass the output.dir of a `lmtune train` run"])
    config = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}
    return RunData(root, config, _json(root / "data_stats.json"), read_metrics(root / "metrics.jsonl"),
                   _json(root / "train_summary.json"), _json(root / "eval.json"), _json(root / "env.json"))


def cfg_get(config: dict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def effective_lr(config: dict) -> float | None:
    return cfg_get(config, "train.learning_rate") or DEFAULT_LR.get(config.get("method", ""), None)


def data_label(config: dict) -> str:
    task = cfg_get(config, "data.task")
    if task:
        return f"bundled task: {task}"
    return ", ".join(cfg_get(config, "data.train", []) or []) or "-"


# ---------------------------------------------------------------- plots

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(metrics: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in metrics if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(metrics: list[dict]) -> str | None:
    """Loss (train and validation) and learning rate against optimizer step."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot global state

    train_x, train_y = _series(metrics, "loss")
    eval_x, eval_y = _series(metrics, "eval_loss")
    lr_x, lr_y = _series(metrics, "learning_rate")
    if not (train_x or eval_x or lr_x):
        return None
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_lr = fig.subplots(1, 2)
    if train_x:
        ax_loss.plot(train_x, train_y, label="train loss", color="#3867d6")
    if eval_x:
        ax_loss.plot(eval_x, eval_y, "o-", label="validation loss", color="#eb3b5a")
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.grid(alpha=.3)
    ax_loss.legend()
    if lr_x:
        ax_lr.plot(lr_x, lr_y, color="#20bf6b")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.grid(alpha=.3)
    return _png(fig)


REWARD_SERIES = (("rewards/chosen", "chosen", "#20bf6b"), ("rewards/rejected", "rejected", "#eb3b5a"),
                 ("rewards/margins", "margin (chosen - rejected)", "#3867d6"))


def plot_rewards(metrics: list[dict]) -> str | None:
    """A preference objective's own numbers as TRL logs them: the implicit rewards of the chosen
    and rejected answers and their margin, and the share of pairs ranked right."""
    from matplotlib.figure import Figure

    if not _series(metrics, "rewards/margins")[0]:
        return None
    fig = Figure(figsize=(10, 3.6))
    ax_r, ax_acc = fig.subplots(1, 2)
    for key, label, color in REWARD_SERIES:
        x, y = _series(metrics, key)
        if x:
            ax_r.plot(x, y, label=label, color=color)
    ax_r.set(xlabel="step", ylabel="reward (beta x log-ratio to the reference)", title="Rewards")
    ax_r.grid(alpha=.3)
    ax_r.legend()
    x, y = _series(metrics, "rewards/accuracies")
    if x:
        ax_acc.plot(x, y, color="#8854d0")
    ax_acc.set(xlabel="step", ylabel="share of pairs", title="Chosen ranked above rejected", ylim=(-0.05, 1.05))
    ax_acc.grid(alpha=.3)
    return _png(fig)


def section_rewards(run: RunData) -> str:
    png = plot_rewards(run.metrics)
    if png is None:
        return ""
    last = [r for r in run.metrics if "rewards/margins" in r and "loss" in r]
    note = ""
    if last:
        note = (f'<p class="muted">last logged step {last[-1].get("step")}: margin '
                f'{H.fmt_num(last[-1]["rewards/margins"])}, chosen ranked above rejected in '
                f'{H.fmt_pct(last[-1].get("rewards/accuracies"))} of pairs.</p>')
    objective = cfg_get(run.config, "train.objective", "dpo")
    return f"<h2>Objective: {H.esc(objective)}, chosen vs rejected</h2>" + H.img(png, "rewards") + note


def plot_base_vs_tuned(ev: dict | None) -> str | None:
    """Task metrics (base vs tuned bars) and the forgetting probe's perplexity with its thresholds."""
    from matplotlib.figure import Figure

    task = (ev or {}).get("task") or {}
    forget = (ev or {}).get("forgetting")
    if not task.get("tuned") and not forget:
        return None
    fig = Figure(figsize=(10, 3.6))
    ax_task, ax_forget = fig.subplots(1, 2)
    if task.get("tuned"):
        names = [m for m in task.get("metrics", task["tuned"]) if m in task["tuned"]]
        xs = range(len(names))
        base = task.get("base") or {}
        if base:
            ax_task.bar([x - .2 for x in xs], [base.get(n, 0) for n in names], .4, label="base", color="#a5b1c2")
        ax_task.bar([x + (.2 if base else 0) for x in xs], [task["tuned"][n] for n in names], .4,
                    label="tuned", color="#3867d6")
        ax_task.set_xticks(list(xs), names)
        ax_task.set(ylim=(0, 1.05), title=f"Task metrics ({task.get('name')})")
        ax_task.legend()
    else:
        ax_task.set_axis_off()
    if forget:
        b, t = forget["base_perplexity"], forget["tuned_perplexity"]
        colour = {"ok": "#2e7d32", "warning": "#d98e04"}.get(forget["verdict"], "#c62828")
        ax_forget.bar(["base", "tuned"], [b, t], color=["#a5b1c2", colour])
        ax_forget.axhline(b * forget["warn_at"], ls="--", color="#d98e04", label=f"warn (x{forget['warn_at']:g})")
        ax_forget.axhline(b * forget["fail_at"], ls="--", color="#c62828", label=f"forgotten (x{forget['fail_at']:g})")
        ax_forget.set(ylabel="perplexity", title=f"General-text probe: {forget['verdict']}")
        ax_forget.legend()
    else:
        ax_forget.set_axis_off()
    return _png(fig)


# ---------------------------------------------------------------- sections

def section_summary(run: RunData) -> str:
    c, s, ev = run.config, run.summary or {}, run.eval or {}
    val = (ev.get("validation") or {}).get("tuned") or {}
    eval_loss = val.get("loss", s.get("eval_loss"))
    objective = cfg_get(c, "train.objective", "sft")
    items = [("method", H.esc(c.get("method", "-") + ("" if objective == "sft" else f", {objective}"))),
             ("base model", H.esc(cfg_get(c, "model.name_or_path", "-"))),
             ("data", H.esc(data_label(c))),
             ("trainable params", H.esc(_trainable(s))),
             ("train time", H.esc(H.fmt_seconds(s.get("train_seconds")))),
             ("peak memory", H.esc(H.fmt_mb(s.get("peak_memory_mb")))),
             ("eval loss", H.esc(H.fmt_num(eval_loss)))]
    task = ev.get("task")
    if task:
        prim = task["primary"]
        base = (task.get("base") or {}).get(prim)
        text = H.fmt_pct(task["tuned"].get(prim)) + (f" (base {H.fmt_pct(base)})" if base is not None else "")
        items.append((prim.replace("_", " "), H.esc(text)))
    items.append(("forgetting", H.badge((ev.get("forgetting") or {}).get("verdict"))))
    return H.cards(items)


def _trainable(s: dict) -> str:
    tp, total = s.get("trainable_params"), s.get("total_params")
    if tp is None:
        return "-"
    return f"{H.fmt_params(tp)} ({100 * tp / total:.2f}%)" if total else H.fmt_params(tp)


def section_curves(run: RunData) -> str:
    png = plot_training(run.metrics)
    if png is None:
        return '<p class="muted">No metrics.jsonl rows yet (the run logged nothing).</p>'
    steps = [r.get("step") for r in run.metrics if "loss" in r]
    note = f'<p class="muted">{len(steps)} logged training steps.</p>'
    return H.img(png, "training and validation loss, learning rate") + note


def section_eval(run: RunData) -> str:
    ev = run.eval
    if not ev:
        return f'<p class="muted">Not evaluated yet: run <code>lmtune eval {H.esc(run.root)}</code>.</p>'
    rows = []
    val = ev.get("validation") or {}
    for key, label in (("loss", "validation loss"), ("perplexity", "validation perplexity")):
        if val.get("tuned"):
            b = (val.get("base") or {}).get(key)
            rows.append([label, H.fmt_num(b), H.fmt_num(val["tuned"][key]), ""])
    task = ev.get("task") or {}
    for m in task.get("metrics", []):
        t, b = task["tuned"].get(m), (task.get("base") or {}).get(m)
        delta = "" if b is None or t is None else f"{100 * (t - b):+.1f} pts"
        rows.append([m + (" (primary)" if m == task.get("primary") else ""), H.fmt_pct(b), H.fmt_pct(t), delta])
    parts = [H.table(["metric", "base", "tuned", "change"], rows, numeric=(1, 2, 3))]
    parts.append(rag_section(ev))   # with retrieval: the same metrics with docs, side by side
    if task:
        parts.append(f'<p class="muted">{task["examples"]} test examples from {H.esc(task["source"])}, '
                     f'greedy decoding, up to {ev.get("settings", {}).get("max_new_tokens")} new tokens. '
                     f'Loss measured on: {H.esc(val.get("source", "-"))}.</p>')
    for key in ("task_note", "validation_note"):
        if ev.get(key):
            parts.append(f'<p class="muted">{H.esc(ev[key])}</p>')
    png = plot_base_vs_tuned(ev)
    if png:
        parts.append(H.img(png, "task metrics and probe perplexity, base vs tuned"))
    return "\n".join(parts)


def section_forgetting(run: RunData) -> str:
    f = (run.eval or {}).get("forgetting")
    if not f:
        return '<p class="muted">Not checked (eval.forgetting_check is off, or the run is not evaluated).</p>'
    rows = [["probe perplexity, base", H.fmt_num(f["base_perplexity"])],
            ["probe perplexity, tuned", H.fmt_num(f["tuned_perplexity"])],
            ["ratio tuned / base", f"x{f['ratio']:.2f}"],
            ["thresholds", f"warning above x{f['warn_at']:g}, forgotten above x{f['fail_at']:g}"],
            ["probe", f"{f['passages']} passages, {f['tokens']:,} tokens ({f['probe']})"]]
    return (f"<p>Verdict: {H.badge(f['verdict'])} General English passages that no task trains on; "
            f"a fine-tune that over-specialises makes them much less predictable.</p>"
            + H.table(["measure", "value"], rows))


def section_samples(run: RunData) -> str:
    ev = run.eval or {}
    samples = ev.get("samples") or []
    if not samples:
        return '<p class="muted">No generated samples.</p>'
    prim = (ev.get("task") or {}).get("primary", "")
    has_base = any("base" in s for s in samples)
    headers = ["prompt", "reference"] + (["base"] if has_base else []) + ["tuned"]

    def cell(s: dict, side: str) -> str:
        score = (s.get(f"{side}_scores") or {}).get(prim)
        mark = "" if score is None else f"   [{prim} {score:.2f}]"
        return f"{s.get(side, '')}{mark}"

    rows = [[s["prompt"], s["reference"]] + ([cell(s, "base")] if has_base else []) + [cell(s, "tuned")]
            for s in samples]
    return H.table(headers, rows, text_cols=tuple(range(len(headers))))


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}{k}.")
        return out
    if isinstance(obj, list):
        text = ", ".join(str(x) for x in obj[:6]) + (f", ... ({len(obj)} items)" if len(obj) > 6 else "")
        return [(prefix.rstrip("."), text)]
    return [(prefix.rstrip("."), H.fmt_num(obj) if isinstance(obj, (int, float)) else str(obj))]


def section_data(run: RunData) -> str:
    if not run.data_stats:
        return '<p class="muted">No data_stats.json in this run.</p>'
    stats = dict(run.data_stats)
    warnings = stats.pop("warnings", None) or []   # the data pipeline's (lmtune/data/holdout.py)
    listed = "".join(f"<li>warning: {H.esc(w)}</li>" for w in warnings)
    return (f"<ul>{listed}</ul>" if listed else "") + H.table(["statistic", "value"], _flatten(stats))


CONFIG_KEYS = ("model.name_or_path", "method", "data.task", "data.train", "data.template", "data.max_length",
               "data.packing", "train.epochs", "train.max_steps", "train.batch_size", "train.grad_accum",
               "train.scheduler", "train.warmup_ratio", "train.precision", "train.seed")
LORA_KEYS = ("lora.r", "lora.alpha", "lora.dropout", "lora.target_modules", "lora.use_dora")
QUANT_KEYS = ("quant.type", "quant.double_quant", "quant.compute_dtype")


def section_config(run: RunData) -> str:
    c = run.config
    keys = list(CONFIG_KEYS)
    if c.get("method") in ("lora", "qlora"):
        keys += LORA_KEYS
    if c.get("method") == "qlora":
        keys += QUANT_KEYS
    rows = [[k, cfg_get(c, k)] for k in keys]
    rows.insert(8, ["learning rate (effective)", effective_lr(c)])
    text = yaml.safe_dump(c, sort_keys=False, default_flow_style=False)
    return (H.table(["key", "value"], rows)
            + f"<details><summary>full config.yaml</summary><pre>{H.esc(text)}</pre></details>")


def section_env(run: RunData) -> str:
    env, s = run.env or {}, run.summary or {}
    rows = [[k, v] for k, v in (env.get("versions") or {}).items() if v]
    rows += [[k, v] for k, v in (env.get("hardware") or {}).items()]
    rows += [["global step", s.get("global_step")], ["train seconds", s.get("train_seconds")],
             ["peak memory (MB)", s.get("peak_memory_mb")]]
    return H.table(["item", "value"], rows) if rows else '<p class="muted">No env.json.</p>'


def render(run: RunData) -> str:
    ev = run.eval or {}
    stamp = ev.get("evaluated_at", "")
    body = [f"<h1>lmtune run report: {H.esc(run.name)}</h1>",
            f'<p class="muted">{H.esc(run.root.resolve())}{" - evaluated " + H.esc(stamp) if stamp else ""}</p>',
            section_summary(run),
            "<h2>Training curves</h2>", section_curves(run), section_rewards(run),
            section_grpo(run.metrics, (run.summary or {}).get("warnings")),
            "<h2>Evaluation: base vs tuned</h2>", section_eval(run),
            "<h2>Forgetting check</h2>", section_forgetting(run),
            "<h2>Samples</h2>", section_samples(run),
            "<h2>Data</h2>", section_data(run),
            "<h2>Configuration</h2>", section_config(run),
            "<h2>Time, memory, environment</h2>", section_env(run)]
    return H.page(f"lmtune report: {run.name}", "\n".join(body))


def write_report(path: str | Path) -> Path:
    """Render RUN/report.html (atomically) and return its path."""
    run = load_run(path)
    out = run.root / REPORT_FILE
    write_text(out, render(run))
    return out
