"""GRPO's rewards, named in `rl.reward`, each a TRL reward function (prompts, completions, **columns)
-> one float per completion; TRL sums them (weighted by rl.reward_weights).

    task    the task's own metric against the record's reference (lmtune/tasks: SQL by execution
            with partial credit for overlapping rows, JSON by fields, the catalogue by facts, other
            data exact match or ROUGE-L): Task.credit
    format  the answer is well-formed and finished: SQL runs, JSON parses, a catalogue answer has
            the trained sentence form, other data non-empty;
            0 when sampling hit rl.max_new_tokens
    length  0 up to the reference's length, down to -1 at twice it: long answers cost
    FILE.py:NAME  the user's own function, loaded from the file they name (never by module name)
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

from lmtune.errors import ConfigError
from lmtune.tasks import get_task

BUILT_IN = ("task", "format", "length")
# the per-example metric that says "well-formed" for each bundled task
FORM_METRIC = {"sql": "executable", "json": "valid_json", "catalogue": "style"}
# the task reward of each bundled task: its own partial credit (SQL: Task.credit's overlapping rows)
TASK_METRIC = {"sql": None, "json": "field_accuracy", "catalogue": "fact_accuracy"}


class TaskRewards:
    """The built-in rewards of one task; `template` cuts completions at its stop strings as
    `lmtune generate` does."""

    def __init__(self, task_name: str | None, template, max_new_tokens: int, text_metric: str = "exact_match"):
        self.task = get_task(task_name or "generic")   # a user's own data: exact match, ROUGE-L
        self.stops = tuple(s for s in getattr(template, "stop_strings", ()) if s)
        self.max_new_tokens = max_new_tokens
        # rl.text_metric is for data without a bundled task; a bundled task has a metric of its own
        # (the catalogue's scorer has no rouge_l: asking it for one was a KeyError)
        self.metric = TASK_METRIC.get(self.task.name, text_metric)

    def cut(self, completion: str) -> str:
        ends = [i for i in (completion.find(s) for s in self.stops) if i >= 0]
        return completion[:min(ends)] if ends else completion

    def answers(self, completions: list) -> list[str]:
        return [self.task.extract_answer(self.cut(_text(c))) for c in completions]

    def score(self, completions: list, references: list[str]) -> list[float]:
        """The task reward alone (also what `lmtune pairs` ranks by)."""
        return [float(x) for x in self.task.credit(self.answers(completions), list(references), self.metric)]

    # TRL calls reward functions by keyword; `reference` is the prompt data's column (prompts.py)
    def reward_task(self, completions, reference, **_):
        return self.score(completions, reference)

    def reward_format(self, completions, reference, completion_ids=None, **_):
        answers = self.answers(completions)
        metric = FORM_METRIC.get(self.task.name)
        if metric:
            formed = [row[metric] for row in self.task.score_examples(answers, list(reference))]
        else:
            formed = [float(bool(a.strip())) for a in answers]
        ids = completion_ids or [None] * len(answers)
        return [0.0 if i is not None and len(i) >= self.max_new_tokens else f for f, i in zip(formed, ids)]

    def reward_length(self, completions, reference, **_):
        out = []
        for c, ref in zip(completions, reference):
            extra = len(self.cut(_text(c)).strip()) - len(ref)
            out.append(-min(1.0, max(0, extra) / max(1, len(ref))))
        return out


def _text(completion) -> str:
    """A completion as TRL passes it: text, or (conversational data) a list holding one message."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion


def reward_functions(cfg, template) -> list:
    """cfg.rl.reward -> TRL reward functions, in order; each named as the user wrote it (TRL logs
    rewards/NAME/mean and rewards/NAME/std)."""
    rewards = TaskRewards(cfg.data.task, template, cfg.rl.max_new_tokens, cfg.rl.text_metric)
    out = []
    for i, spec in enumerate(cfg.rl.reward):
        fn = getattr(rewards, f"reward_{spec}") if spec in BUILT_IN else load_user_function(spec, f"rl.reward[{i}]")
        out.append(_named(fn, spec))
    return out


def _named(fn, name: str):
    def reward(*args, **kwargs):
        return fn(*args, **kwargs)

    reward.__name__ = Path(name.split(":")[-1]).name if ":" in name else name
    return reward


def check_user_rewards(cfg) -> None:
    """Import every reward function of the user's now (train's preflight): a missing file or
    function stops the run before its directory exists."""
    for i, spec in enumerate(cfg.rl.reward):
        if spec not in BUILT_IN:
            load_user_function(spec, f"rl.reward[{i}]")


def load_user_function(spec: str, key: str):
    """`path/to/file.py:function` -> the function, imported from that file only (once per file
    and process). ConfigError (exit 2) naming `key` when the file, the function or the import fails."""
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not path_text.endswith(".py") or not name.isidentifier():
        raise ConfigError(f"{key}: got {spec!r}; a reward of your own is path/to/file.py:function_name")
    if not path.is_file():
        raise ConfigError(f"{key}: {path}: no such file", [f"give the path of a Python file (relative to {Path.cwd()})"])
    module_name = "lmtune_reward_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module = sys.modules.get(module_name) or _import_file(path, module_name, key)
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name)
        raise ConfigError(f"{key}: {path} has no function {name!r}",
                          [f"functions defined there: {', '.join(found) or 'none'}",
                           "a reward function takes (prompts, completions, **kwargs) and returns one float per "
                           "completion"])
    return fn


def _import_file(path: Path, module_name: str, key: str):
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"{key}: {path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:   # the user's module failed while importing: say where, in their file
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if Path(f.filename).resolve() == path.resolve()), None)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{key}: {where}: importing it raised {type(exc).__name__}: {exc}") from None
    sys.modules[module_name] = module   # imported once per process; pickling by reference finds it
    return module
