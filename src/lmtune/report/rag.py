"""The task metrics with and without retrieved passages, side by side (eval.json's task.base_rag,
task.tuned_rag and rag block, written by evaluate/run.py), for report.html, the UI's run page and
`lmtune compare`. Reads eval.json only."""

from __future__ import annotations

from typing import Any

from lmtune.report import html as H

HEADERS = ["metric", "base", "base + docs", "tuned", "tuned + docs"]


def has_rag(ev: dict | None) -> bool:
    return bool(((ev or {}).get("task") or {}).get("tuned_rag"))


def rows(ev: dict) -> list[list[str]]:
    """One row per metric: base, base + docs, tuned, tuned + docs ('-' where not measured)."""
    task = ev["task"]
    sides = [task.get(k) or {} for k in ("base", "base_rag", "tuned", "tuned_rag")]
    return [[m + (" (primary)" if m == task.get("primary") else ""), *(H.fmt_pct(s.get(m)) for s in sides)]
            for m in task.get("metrics", [])]


def settings_text(ev: dict) -> str:
    """Where the passages came from: docs, top_k, chunking, passages found per prompt."""
    r = ev.get("rag") or {}
    parts = [f"docs {r.get('docs', '?')}", f"top_k {r.get('top_k', '?')}"]
    if r.get("chunk_tokens") is not None:
        parts.append(f"chunks of {r['chunk_tokens']} tokens ({r.get('chunk_overlap', 0)} overlap)")
    if r.get("passages_per_prompt") is not None:
        parts.append(f"{r['passages_per_prompt']} passages per prompt on average")
    return ", ".join(parts)


def section(ev: dict | None) -> str:
    """The with/without-docs table and the retrieval settings; '' when eval.json has no retrieval."""
    if not has_rag(ev):
        return ""
    note = ("The same test prompts with retrieved passages put before each question (docs/rag.md): "
            f"{settings_text(ev)}.")
    return ("<h3>With and without retrieved documents</h3>\n" + H.table(HEADERS, rows(ev), numeric=(1, 2, 3, 4))
            + f'\n<p class="muted">{H.esc(note)}</p>')


def primary(ev: dict | None) -> tuple[Any, Any]:
    """(tuned + docs, base + docs) of the primary metric; (None, None) without retrieval."""
    task = (ev or {}).get("task") or {}
    prim = task.get("primary")
    return (task.get("tuned_rag") or {}).get(prim), (task.get("base_rag") or {}).get(prim)
