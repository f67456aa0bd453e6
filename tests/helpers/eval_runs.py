"""Two runs trained once per session and shared by the evaluation, report and compare tests
(tests/evaluate/test_eval.py, tests/report/test_report.py, tests/report/test_compare.py); each ends
with train's own final evaluation (eval.json):
  gentle  LoRA, small LR, 2 steps, on the bundled SQL task   -> forgetting "ok"
  harsh   full fine-tune, LR 0.3, 6 steps, on alpaca data    -> forgetting "forgotten"
"""

from __future__ import annotations

import torch

from lmtune.config import load_config
from lmtune.tasks import task_files
from lmtune.train.recipe import train
from tiny_models import save_tiny_model, write_alpaca

_CACHE: dict = {}
COMMON = ["train.batch_size=4", "train.grad_accum=1", "train.logging_steps=1", "train.eval_steps=1000",
          "train.save_steps=1000", "train.load_best=false", "train.warmup_ratio=0", "output.report=false",
          "eval.num_samples=4", "eval.max_new_tokens=12"]


def trained_runs(tmp_path_factory) -> dict:
    """{'base', 'gentle', 'harsh', 'test'}: trained (and evaluated by train) once per session."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _CACHE:
        root = tmp_path_factory.mktemp("eval_runs")
        base = save_tiny_model(root / "base", "llama")
        data = write_alpaca(root / "train.jsonl", 40)
        test = write_alpaca(root / "test.jsonl", 6, seed=1)
        # The SQL task with slices of its own train/validation files (speed); test split and scorer
        # still come from data.task.
        sql_train, sql_val = _head(task_files("sql")["train"], root / "sql_train.jsonl", 120), \
            _head(task_files("sql")["validation"], root / "sql_val.jsonl", 16)
        gentle = load_config(None, [f"model.name_or_path={base}", "data.task=sql", "method=lora",
                                    f"data.train={sql_train}", f"data.validation={sql_val}",
                                    "data.max_length=320", "train.max_steps=2", "train.learning_rate=1e-4",
                                    f"output.dir={root / 'gentle'}", *COMMON])
        harsh = load_config(None, [f"model.name_or_path={base}", f"data.train={data}", f"data.test={test}",
                                   "data.val_split=0.2", "data.max_length=96", "method=full",
                                   "train.max_steps=6", "train.learning_rate=0.3",
                                   f"output.dir={root / 'harsh'}", *COMMON])
        before = torch.get_num_threads()
        torch.set_num_threads(1)   # see one_thread below
        try:
            train(gentle, quiet=True)
            train(harsh, quiet=True)
        finally:
            torch.set_num_threads(before)
        _CACHE[key] = {"base": base, "gentle": root / "gentle", "harsh": root / "harsh", "test": test}
    return _CACHE[key]


def _head(src, dst, n: int):
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst
