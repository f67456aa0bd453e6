"""`lmtune data check` on preference records (lmtune/data/preference.py): counts, every bad
record as `file:line: what is wrong (field)`, and one pair rendered with the template."""

from __future__ import annotations

import argparse

from lmtune.commands.data import SAMPLE_CHARS, _row


def check_preference(args: argparse.Namespace, kind: str) -> int:
    from lmtune.data.preference import load_preference, raise_problems, render
    from lmtune.data.templates import get_template

    loaded = load_preference(args.files, kind)
    print(", ".join(args.files))
    objectives = "dpo, orpo" if kind == "pairs" else "kto"
    _row("format", f"{kind} (detected; train.objective {objectives})")
    _row("records", f"{loaded.records} read, {len(loaded.rows)} valid")
    if kind == "kto" and loaded.rows:
        good = sum(1 for r in loaded.rows if r["label"])
        _row("labels", f"{good} desirable, {len(loaded.rows) - good} undesirable")
    raise_problems(loaded, "data")
    tokenizer = None
    if args.model:
        from lmtune.commands.data import _tokenizer

        tokenizer, _ = _tokenizer(args.model)
    template = get_template(args.template, "chat", tokenizer, args.system_prompt)
    rendered, problems = render(loaded.rows[: max(args.samples, 1)], loaded.sources, template)
    if problems:
        from lmtune.errors import DataError

        raise DataError(f"{len(problems)} records the template cannot render", problems)
    _row("template", template.name)
    for item, source in list(zip(rendered, loaded.sources))[: args.samples]:
        answers = [k for k in ("chosen", "rejected", "completion") if k in item]
        print(f"sample {source} (template {template.name}; answers inside [[ ]])")
        text = item["prompt"] + "".join(f"\n{k}: [[{item[k]}]]" for k in answers)
        for line in text[:SAMPLE_CHARS].split("\n"):
            print(f"  | {line}")
    print(f"ok: {len(loaded.rows)} {kind} records, no problems")
    return 0
