"""LLaMA-Factory as a recipe of the CPU benchmark (cpu_throughput.py --recipes ...,llamafactory).

It trains through its own command, `llamafactory-cli train <yaml>`, from its own virtual environment
(benchmarks/peers/setup.sh: llamafactory 0.9.5 pins transformers <= 5.6, trl <= 0.24, peft <= 0.18.1,
which lmtune's environment does not satisfy). This module writes the YAML and the data, runs the
command, and measures what cpu_measure.py measures for the in-process recipes:

  tokens      non-padding positions (attention mask != 0) of the rows LLaMA-Factory trained on, read
              from the tokenized dataset it saves (`tokenized_path`); one epoch trains each row once
  train_s     its own `train_runtime` (the wall time of Trainer.train(), from trainer_state/all_results)
  train_cpu_s CPU seconds of the process over those train_s seconds (CpuClock: /proc sampling)
  peak RSS    ru_maxrss of the llamafactory-cli process (RUSAGE_CHILDREN: imports, data, training)
  eval_loss   cpu_measure.response_loss on the same validation examples, in the layout it trained on:
              base + its saved adapter, loaded here with peft

Its settings, chosen from its docs and code for this CPU run (LLaMA-Factory 0.9.5):
  - the same data as the TRL recipe: one user turn (instruction, blank line, input) and the answer;
    no `template` key, so LLaMA-Factory parses the tokenizer's own chat template (data/template.py
    parse_template), the layout TRL and lmtune train on; loss on the answer only (its default);
  - `neat_packing: true`: packing into rows of cutoff_len without attention across examples (on
    non-flash attention a 4-D block-diagonal mask, data/collator.py), as lmtune and TRL pack;
  - LoRA r 16, alpha 32, dropout 0.05 on the seven projections (`lora_target: all`), lr 2e-4, cosine,
    10 % warm-up, per-device batch 1 x accumulation 4 (packed rows, as the TRL recipe);
  - gradient checkpointing off (`disable_gradient_checkpointing: true`; LLaMA-Factory turns it on by
    default, which recomputes every layer: the other recipes run without it);
  - fp32 (`bf16/fp16: false`: this CPU has no 16-bit math), no evaluation, no saving of checkpoints,
    no loss plot, one preprocessing worker, dataloader in the main process.
Options (VARIANTS in cpu_throughput.py): any YAML key, e.g. {"neat_packing": false} or
{"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / "peers" / ".venvs" / "llamafactory"


def _user_turn(row: dict) -> str:
    # the same user message as cpu_recipes._prompt_completion (so the same scoring layout)
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input", "").strip() else "")


def write_data(job, data_dir: Path) -> str:
    from cpu_recipes import read_jsonl

    data_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": _user_turn(r), "output": r["output"]} for r in read_jsonl(job.train_file)]
    (data_dir / "train.json").write_text(json.dumps(rows), encoding="utf-8")
    info = {"bench": {"file_name": "train.json", "formatting": "alpaca",
                      "columns": {"prompt": "instruction", "response": "output"}}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return "bench"


def yaml_settings(job, work: Path, dataset: str) -> dict:
    settings = {
        "model_name_or_path": job.model_dir, "trust_remote_code": False,
        "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target": "all",
        "dataset": dataset, "dataset_dir": str(work / "data"), "cutoff_len": job.max_length,
        "neat_packing": True, "overwrite_cache": True, "preprocessing_num_workers": 1,
        "tokenized_path": str(work / "tokenized"),
        "output_dir": str(work / "out"), "overwrite_output_dir": True,
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4,
        "learning_rate": 2e-4, "num_train_epochs": 1.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
        "disable_gradient_checkpointing": True,   # its default is on: recomputation costs time here
        "bf16": False, "fp16": False, "use_cpu": True, "seed": job.seed, "data_seed": job.seed,
        "logging_steps": job.logging_steps, "save_strategy": "no", "eval_strategy": "no",
        "plot_loss": False, "report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    settings.update(job.options)
    return settings


def useful_tokens(tokenized: Path) -> tuple[int, int, int]:
    """(non-padding tokens, positions, rows) of the training rows LLaMA-Factory saved."""
    from datasets import load_from_disk

    data = load_from_disk(str(tokenized))
    train = data["train"] if "train" in data else data
    tokens = slots = 0
    for mask in train["attention_mask"]:
        tokens += sum(1 for m in mask if m != 0)
        slots += len(mask)
    return tokens, slots, len(train)


def _results(out: Path) -> dict:
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").is_file() else {}
    results = json.loads((out / "all_results.json").read_text()) if (out / "all_results.json").is_file() else {}
    return {"train_runtime": results.get("train_runtime"), "global_step": state.get("global_step"),
            "losses": [h["loss"] for h in state.get("log_history", []) if "loss" in h]}


def run_job(job) -> dict:
    """Train with llamafactory-cli in a subprocess, then score its adapter; returns the result row."""
    import yaml

    from cpu_measure import response_loss
    from cpu_recipes import answer_items, read_jsonl

    cli = VENV / "bin" / "llamafactory-cli"
    if not cli.is_file():
        raise SystemExit(f"{cli} is missing: run bash benchmarks/peers/setup.sh llamafactory")
    work = Path(job.work)
    for old in ("tokenized", "out"):   # this harness's own outputs from an earlier run
        shutil.rmtree(work / old, ignore_errors=True)
    settings = yaml_settings(job, work, write_data(job, work / "data"))
    config = work / "llamafactory.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1",
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", LLAMAFACTORY_VERBOSITY="WARN")
    started = time.time()
    rc, log, cpu = _run_sampled([str(cli), "train", str(config)], env, work)
    wall = time.time() - started
    (work / "llamafactory.log").write_text(log, encoding="utf-8")
    if rc != 0:
        raise SystemExit("llamafactory-cli failed:\n" + "\n".join(log.splitlines()[-15:]))
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = _results(work / "out")
    tokens, slots, rows = useful_tokens(work / "tokenized")
    train_s = res["train_runtime"] or wall
    train_cpu = cpu.train_seconds(train_s)
    loss, n_eval = _score(job, work / "out", answer_items, read_jsonl, response_loss)
    return {
        "label": job.label, "recipe": job.recipe, "model": Path(job.model_dir).name,
        "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None, "steps": res["global_step"],
        "batches": rows, "tokens": tokens, "slots": slots, "loss_tokens": None,
        "pad_share": round(1 - tokens / slots, 3) if slots else None,
        "train_s": round(train_s, 2), "setup_s": round(wall - train_s, 2), "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / train_s, 1), "train_cpu_s": train_cpu and round(train_cpu, 2),
        "tokens_per_cpu_s": round(tokens / train_cpu, 1) if train_cpu else None,
        "peak_rss_mb": round(peak_kib / 1024, 1), "eval_loss": round(loss, 4),
        "final_train_loss": res["losses"][-1] if res["losses"] else None, "eval_examples": n_eval,
        "info": {"layout": "tokenizer chat template (parse_template)", "yaml": str(config),
                 **{k: settings[k] for k in ("neat_packing", "per_device_train_batch_size",
                                             "gradient_accumulation_steps", "cutoff_len")}},
        "options": job.options,
    }


class CpuClock:
    """CPU seconds (user + system) of a running process, sampled from /proc every 0.1 s, and the
    moment Trainer.train() returned (its "'train_runtime'" log line): the CPU time of the training
    loop is the CPU spent in the train_runtime seconds before that line (cpu_measure.py measures
    the in-process recipes around trainer.train() the same way)."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.end, self._stop = pid, [], None, False
        self._tick = os.sysconf("SC_CLK_TCK")

    def now(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick   # utime + stime

    def run(self) -> None:
        while not self._stop:
            cpu = self.now()
            if cpu is not None:
                self.samples.append((time.time(), cpu))
            time.sleep(0.1)

    def mark_end(self) -> None:
        self.end = (time.time(), self.now())

    def train_seconds(self, train_runtime: float) -> float | None:
        if not self.end or self.end[1] is None or not self.samples:
            return None
        start = self.end[0] - train_runtime
        before = [cpu for t, cpu in self.samples if t <= start]
        return self.end[1] - (before[-1] if before else self.samples[0][1])


def _run_sampled(cmd: list[str], env: dict, cwd: Path) -> tuple[int, str, CpuClock]:
    import threading

    proc = subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    clock = CpuClock(proc.pid)
    sampler = threading.Thread(target=clock.run, daemon=True)
    sampler.start()
    lines = []
    for line in proc.stdout:
        if clock.end is None and "'train_runtime'" in line:
            clock.mark_end()
        lines.append(line)
    rc = proc.wait()
    clock._stop = True
    sampler.join()
    return rc, "".join(lines), clock


def _score(job, adapter: Path, answer_items, read_jsonl, response_loss) -> tuple[float, int]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(job.model_dir)
    base = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    items = answer_items(tok, read_jsonl(job.val_file)[: job.eval_examples], chat=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return response_loss(model, items, pad), len(items)
