"""eval.json -> the few lines a terminal shows after `lmtune eval` or at the end of `lmtune train`."""

from __future__ import annotations


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summarize(result: dict) -> str:
    lines = []
    val = result.get("validation")
    if val:
        t, b = val["tuned"], val.get("base")
        base = f"   (base: loss {b['loss']:.4f}, perplexity {b['perplexity']:.2f})" if b else ""
        lines.append(f"eval loss {t['loss']:.4f}, perplexity {t['perplexity']:.2f} "
                     f"on {t['examples']} examples [{val.get('source', '')}]{base}")
    elif result.get("validation_note"):
        lines.append(result["validation_note"])
    task = result.get("task")
    if task:
        lines.append(f"task {task['name']}: {task['examples']} test examples from {task['source']}")
        width = max(len(m) for m in task["metrics"])
        shots = (result.get("settings") or {}).get("few_shot") or 0
        if shots:
            lines[-1] += f", {shots}-shot prompts"
        # a plain model scored on its own has one column; a run has base and tuned
        columns = ([("model", task["tuned"])] if result.get("subject") == "model"
                   else [("base", task.get("base") or {}), ("tuned", task["tuned"])])
        if task.get("tuned_rag") is not None:   # retrieval: the same prompts with passages, beside them
            rag = [("tuned+docs", task["tuned_rag"])]
            columns += rag if result.get("subject") == "model" else [("base+docs", task.get("base_rag") or {}), *rag]
            columns = [(n.replace("tuned", "model") if result.get("subject") == "model" else n, v) for n, v in columns]
            r = result.get("rag") or {}
            lines.append(f"  +docs: top {r.get('top_k')} passages of {r.get('docs')} in each prompt")
        lines.append(f"  {'metric'.ljust(width)}" + "".join(f"  {name:>7}" for name, _ in columns))
        for m in task["metrics"]:
            star = " *" if m == task["primary"] else ""
            lines.append(f"  {m.ljust(width)}" + "".join(f"  {_pct(v.get(m)):>{max(7, len(n))}}" for n, v in columns)
                         + star)
    elif result.get("task_note"):
        lines.append(result["task_note"])
    f = result.get("forgetting")
    if f:
        lines.append(f"forgetting: {f['verdict']}: general-text perplexity {f['base_perplexity']:.1f} -> "
                     f"{f['tuned_perplexity']:.1f} (x{f['ratio']:.2f}; warn > x{f['warn_at']:g}, "
                     f"forgotten > x{f['fail_at']:g})")
    return "\n".join(lines)
