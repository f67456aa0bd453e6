"""What a sweep leaves besides its trial runs: the results table (the `lmtune compare` layout with
the trial's state and parameters in front), DIR/best.yaml (`lmtune train` runs it as is), and the
winner's score on the test split (DIR/best_test/eval.json), measured once, after selection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmtune.report import html as H
from lmtune.report.compare import Row, cells, compare
from lmtune.config import _merge, from_dict, parse_overrides, read_yaml
from lmtune.data import resolve_files
from lmtune.evaluate import EvalSettings, evaluate_model, loss_data
from lmtune.generate import Generator
from lmtune.inference_loading import open_path
from lmtune.run.layout import write_json, write_text
from lmtune.sweep.study import SweepSpec
from lmtune.sweep.trial import trial_overrides

BEST_YAML = "best.yaml"
BEST_TEST = "best_test"
RESULTS_MD = "results.md"


@dataclass
class TrialRow:
    number: int
    state: str                       # complete | pruned | fail | running | waiting
    params: dict
    value: float | None              # the sweep's metric on validation
    note: str                        # why pruned / failed
    row: Row                         # the compare columns
    intermediate: dict               # step -> reported value (validation loss, signed)


def _empty_row(name: str, attrs: dict) -> Row:
    return Row(name, "-", attrs.get("trainable_params"), attrs.get("total_params"), attrs.get("peak_memory_mb"),
               attrs.get("train_seconds"), attrs.get("eval_loss"), None, None, None, None,
               attrs.get("forgetting_ratio"), None)


def collect(study, spec: SweepSpec) -> tuple[list[TrialRow], list[str]]:
    """One TrialRow per trial (queued and interrupted ones left out), with the compare columns read
    from the trial's run directory when this machine has it, else from what the study recorded."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state.name != "WAITING" and not t.user_attrs.get("interrupted")]
    dirs = {t.number: Path(t.user_attrs.get("run_dir", spec.out / f"trial-{t.number:04d}")) for t in trials}
    local = [dirs[t.number] for t in trials if (dirs[t.number] / "config.yaml").is_file()]
    rows, notes = compare(local) if local else ([], [])
    by_name = {r.run: r for r in rows}
    out = []
    for t in trials:
        name = dirs[t.number].name
        row = by_name.get(name) or _empty_row(name, t.user_attrs)
        note = t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason") or ""
        out.append(TrialRow(t.number, t.state.name.lower(), dict(t.params), t.value, note, row,
                            dict(t.intermediate_values)))
    notes = [n for n in notes if "no task metric" not in n and "no full fine-tuning" not in n]
    return out, notes


def table_cells(rows: list[TrialRow], spec: SweepSpec) -> tuple[list[str], list[list[str]]]:
    """compare's columns, with state, parameters and the sweep's objective after the run name."""
    headers, body = cells([r.row for r in rows]) if rows else (cells([])[0], [])
    keys = [p.key for p in spec.params]
    headers = [headers[0], "state", *keys, f"{spec.metric} (validation)", *headers[1:]]
    out = []
    for r, b in zip(rows, body):
        params = [H.fmt_num(r.params.get(k)) if k in r.params else "-" for k in keys]
        value = H.fmt_num(r.value) if r.value is not None else "-"
        if r.value is not None and spec.metric != "eval_loss":
            value = H.fmt_pct(r.value)
        out.append([b[0], r.state, *params, value, *b[1:]])
    return headers, out


def to_markdown(rows: list[TrialRow], spec: SweepSpec, notes: list[str]) -> str:
    headers, body = table_cells(rows, spec)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in b) + " |" for b in body]
    why = [f"- trial {r.number} {r.state}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + [""] + why + [f"- {n}" for n in notes]) + "\n"


def to_text(rows: list[TrialRow], spec: SweepSpec) -> str:
    headers, body = table_cells(rows, spec)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
    line = lambda cols: "  ".join(str(c).ljust(w) for c, w in zip(cols, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(b) for b in body]) + "\n"


def best_config(spec: SweepSpec, best_params: dict) -> dict:
    """The user's config with the sweep's overrides and the winning values: the same layout as the
    file the sweep started from (a preset's DDP settings stay), its own output directory."""
    trial = trial_overrides(spec, best_params, spec.out / "best")
    # the trial's own evaluation switches are for selection: the best run evaluates as usual
    keep = [o for o in trial if not o.startswith(("output.dir=", "eval.after_train=", "eval.final_val_loss=",
                                                  "output.report="))]
    raw = _merge(read_yaml(spec.config), parse_overrides([*keep, f"output.dir={spec.out / 'best'}"]))
    from_dict(raw, str(spec.out / BEST_YAML))      # validates: a best.yaml train would refuse is a bug
    return raw


def write_best_yaml(spec: SweepSpec, best) -> Path:
    raw = best_config(spec, dict(best.params))
    path = spec.out / BEST_YAML
    head = (f"# lmtune train {path}\n# best of sweep {spec.study_name}: trial {best.number}, "
            f"{spec.metric} {best.value:.6g} on the validation split\n")
    write_text(path, head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False))
    return path


def evaluate_winner(spec: SweepSpec, best) -> dict | None:
    """The winner on the test split (task metrics and forgetting; the base's answers are the same
    for every trial, so they are not generated again), once: DIR/best_test/eval.json.
    Skipped when that file already holds this trial's score (a rerun of a finished sweep)."""
    run_dir = Path(best.user_attrs.get("run_dir", ""))
    out = spec.out / BEST_TEST
    marker = out / "winner.json"
    if marker.is_file() and json.loads(marker.read_text()).get("trial") == best.number:
        return json.loads((out / "eval.json").read_text())
    if not (run_dir / "config.yaml").is_file():
        return None     # the winner ran on another machine: evaluate it there
    cfg = open_path(str(run_dir)).config
    test_files = resolve_files(cfg.data)["test"]
    if not test_files:
        return None
    gen = Generator.load(str(run_dir))
    settings = EvalSettings(test=test_files, base=False, progress=True)
    validation, settings.loss_source = loss_data(cfg, gen.tokenizer, gen.template, settings)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate_model(cfg, out, gen.model, gen.tokenizer, gen.template, validation, settings)
    write_json(marker, {"trial": best.number, "run_dir": str(run_dir)})
    return result
