"""Typed run configuration: a YAML file plus `key.sub=value` overrides -> `Config`.

Every field carries a one-line doc (shown by `lmtune config show --explain`) and, where it has one,
its allowed choices or range. Validation happens in one place (`validate`) and reports every problem
at once, each naming the key as the user typed it, what was given and what is allowed.
This module imports only the standard library and PyYAML: it must stay cheap to import.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune.errors import ConfigError

METHODS = ("full", "lora", "qlora")
# What `learning_rate: null` meant before `auto` (configs and runs written by older lmtune versions).
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}


def _f(default: Any, doc: str, *, choices: tuple | None = None, min: float | None = None,
       max: float | None = None, min_exclusive: bool = False) -> Any:
    """A dataclass field with its doc, choices and range in metadata; a default of "auto" makes
    "auto" the one word a numeric field accepts."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "auto": default == "auto" and choices is None}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name_or_path: str = _f("tiny", "Hub id, local directory, or 'tiny' (the embedded base)")
    revision: str | None = _f(None, "Hub revision (branch, tag or commit) to load")
    dtype: str = _f("auto", "weights dtype: auto picks bf16/fp16 on GPU, fp32 on CPU",
                    choices=("auto", "fp32", "bf16", "fp16"))
    trust_remote_code: bool = _f(False, "run Python code shipped with the model (only if you trust it)")
    allow_pickle: bool = _f(False, "allow loading pickle weights (.bin/.pt); safetensors otherwise")
    attn_implementation: str | None = _f(None, "attention kernel: sdpa, eager, flash_attention_2")


@dataclass
class ReplayConfig:
    ratio: float = _f(0.0, "general examples mixed into the training split per training example "
                           "(0.25: one for every four); never into validation or test. 0: off",
                      min=0.0, max=10.0)
    source: str = _f("general", "general (bundled general text, not the forgetting probe), self (the base "
                                "model's own greedy answers to bundled general prompts, generated before "
                                "training), or a file of examples in any training format")
    max_new_tokens: int = _f(96, "source self: tokens generated per answer", min=1)


@dataclass
class DataConfig:
    task: str | None = _f(None, "bundled task (sql, json): fills train/validation/test and the metric",
                          choices=(None, "sql", "json"))
    train: list[str] = _f([], "training files or directories (jsonl, json, csv, parquet)")
    validation: list[str] = _f([], "validation files; empty -> split val_split off train")
    test: list[str] = _f([], "test files for generation metrics in `lmtune eval`")
    val_split: float = _f(0.05, "share of train held out for validation when no file is given",
                          min=0.0, max=0.5)
    test_size: int | None = _f(None, "examples of train held out as the test split when there is no "
                                     "data.test and no data.task (None: 10%, 20..200; 0: none)", min=0)
    format: str = _f("auto", "record format", choices=("auto", "alpaca", "chat", "prompt_completion", "text"))
    template: str = _f("auto", "prompt template: auto uses the model's chat template if it has one",
                       choices=("auto", "alpaca", "chatml", "model"))
    max_length: int = _f(512, "longest sequence in tokens; longer examples are truncated (counted)", min=8)
    packing: bool = _f(True, "pack several examples per row (TRL, best-fit decreasing)")
    train_on_prompt: bool = _f(False, "also compute the loss on prompt tokens")
    dedupe: bool = _f(True, "drop exact duplicate examples (count reported)")
    system_prompt: str | None = _f(None, "system message added to every example without one")
    seed: int = _f(42, "seed for the train/validation split", min=0)
    cache: bool = _f(True, "reuse prepared (tokenized) data from lmtune's cache when the data files, tokenizer, "
                           "template and data settings are unchanged (README: the data cache)")
    replay: ReplayConfig = field(default_factory=ReplayConfig)


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank", min=1)
    alpha: int = _f(32, "LoRA alpha (scaling = alpha / r; rule of thumb 2 x r)", min=1)
    dropout: float = _f(0.05, "dropout on the LoRA path", min=0.0, max=0.9)
    target_modules: list[str] | str = _f("all-linear", "module names, or all-linear")
    bias: str = _f("none", "which biases to train", choices=("none", "all", "lora_only"))
    use_dora: bool = _f(False, "weight-decomposed LoRA (DoRA)")
    use_rslora: bool = _f(False, "rank-stabilised scaling alpha/sqrt(r)")


@dataclass
class QuantConfig:
    type: str = _f("nf4", "4-bit data type", choices=("nf4", "fp4"))
    double_quant: bool = _f(True, "also quantize the quantization constants (saves ~0.4 bit/param)")
    compute_dtype: str = _f("auto", "matmul dtype: auto = bf16 on bf16 GPUs, fp16 on older, fp32 on CPU",
                            choices=("auto", "fp32", "bf16", "fp16"))


@dataclass
class TrainConfig:
    epochs: float | str = _f("auto", "passes over the training data; auto: from the example count with "
                                     "a floor on optimizer steps (lmtune/hparams.py)",
                             min=0.0, min_exclusive=True)
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: use epochs)", min=-1)
    learning_rate: float | str | None = _f("auto", "peak LR; auto: from the method and the model's width "
                                                   "(lmtune/hparams.py; 2e-4 for LoRA at 7-8B)",
                                           min=0.0, min_exclusive=True)
    batch_size: int | None = _f(None, "examples (or packed rows) per device per micro-batch; None: 1 on "
                                      "CPU (measured fastest, half the memory), 4 on GPUs", min=1)
    grad_accum: int = _f(4, "micro-batches per optimizer step", min=1)
    rows_per_step: int | None = _f(None, "examples (or packed rows) per optimizer step over all processes; "
                                         "when set, grad_accum is derived from it (rows_per_step / "
                                         "(batch_size x processes)), so the step stays the same whatever "
                                         "distributed.nproc resolves to", min=1)
    eval_batch_size: int = _f(8, "batch size for evaluation", min=1)
    warmup_ratio: float = _f(0.1, "share of steps spent warming up the LR", min=0.0, max=1.0)
    warmup_steps: int = _f(0, "warmup steps (overrides warmup_ratio when > 0)", min=0)
    scheduler: str = _f("cosine", "LR schedule",
                        choices=("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts"))
    weight_decay: float = _f(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)", min=0.0)
    optimizer: str = _f("auto", "auto = adamw_torch, paged_adamw_8bit for qlora on CUDA",
                        choices=("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit",
                                 "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"))
    precision: str = _f("auto", "auto = bf16 where supported, fp16 on older GPUs, fp32 on CPU",
                        choices=("auto", "fp32", "bf16", "fp16"))
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    logging_steps: int = _f(5, "log loss/LR every N optimizer steps", min=1)
    eval_steps: int | None = _f(None, "evaluate every N steps (None: once per epoch)", min=1)
    save_steps: int | None = _f(None, "checkpoint every N steps (None: once per epoch)", min=1)
    save_total_limit: int = _f(2, "checkpoints kept on disk (the best is always kept)", min=1)
    load_best: bool = _f(True, "end with the checkpoint of lowest validation loss")
    early_stopping_patience: int | None = _f(None, "stop after N evaluations without improvement", min=1)
    seed: int = _f(42, "seed for initialisation, shuffling and dropout", min=0)
    threads: int | None = _f(None, "CPU threads for torch per process (None: 1 for models with hidden size "
                                   "under 1024 under passive OpenMP waiting, else torch's choice; "
                                   "OMP_NUM_THREADS wins; lmtune/cpu_tuning.py)", min=1)
    lm_head: str = _f("auto", "how the loss runs the LM head: label_logits (the model's own head and "
                              "cross-entropy, only where a label is set: faster on CPU), fused "
                              "(TRL's chunked kernel: never holds full-vocabulary logits, logs entropy); "
                              "auto: label_logits on CPU, fused on GPUs",
                      choices=("auto", "label_logits", "fused"))
    keep_freed_memory: bool = _f(True, "CPU: keep memory torch frees for reuse instead of returning it to "
                                       "the OS each step (faster steps, higher peak RSS; glibc only)")
    omp_wait_policy: str = _f("passive", "OpenMP threads waiting for work: passive (sleep; safe when other "
                                         "jobs share the cores) or active (spin); OMP_WAIT_POLICY wins",
                              choices=("passive", "active"))

    def lm_head_for(self, device_kind: str) -> str:
        """lm_head, or its default for the device: GPUs keep TRL's memory-saving fused head."""
        if self.lm_head != "auto":
            return self.lm_head
        return "label_logits" if device_kind == "cpu" else "fused"

    def micro_batch(self, device_kind: str) -> int:
        """batch_size, or its default for the device: one packed row on CPU was faster than four at
        half the peak RSS (benchmarks/README.md); GPUs want wider batches."""
        return self.batch_size or (1 if device_kind == "cpu" else 4)

@dataclass
class EvalConfig:
    after_train: bool = _f(True, "at the end of train: validation loss, task metrics base vs tuned, forgetting")
    final_val_loss: bool = _f(False, "measure the validation loss at the end of train (train_summary.json "
                                     "eval_loss) even when eval.after_train is false (sweep trials do)")
    max_new_tokens: int = _f(128, "tokens generated per test prompt", min=1)
    num_samples: int | None = _f(None, "score only the first N test examples (None: all)", min=1)
    few_shot: int = _f(0, "solved training examples shown before each test prompt (0: zero-shot)", min=0)
    forgetting_check: bool = _f(True, "perplexity on general text before vs after training")
    forgetting_warn: float = _f(1.5, "perplexity ratio after/before above which to warn", min=1.0)
    forgetting_fail: float = _f(3.0, "perplexity ratio above which the model has forgotten", min=1.0)


@dataclass
class DistributedConfig:
    backend: str = _f("none", "none (one process), ddp, fsdp or deepspeed",
                      choices=("none", "ddp", "fsdp", "deepspeed"))
    nproc: int | str = _f(1, "processes per machine (GPUs, or CPU workers for ddp); auto: one per GPU, "
                             "else one single-threaded worker per core for models below hidden size 1024 "
                             "(else 1), as many as divide train.rows_per_step", min=1)
    nnodes: int = _f(1, "number of machines", min=1)
    node_rank: int = _f(0, "this machine's rank among nnodes", min=0)
    master_addr: str = _f("127.0.0.1", "address of the rank-0 machine")
    master_port: int = _f(29500, "port on the rank-0 machine", min=1, max=65535)
    deepspeed_config: str | None = _f(None, "DeepSpeed JSON (default: shipped ZeRO-2 for deepspeed)")
    fsdp: str = _f("full_shard auto_wrap", "FSDP options passed to the Trainer")


@dataclass
class OutputConfig:
    dir: str = _f("runs/latest", "run directory")
    overwrite: bool = _f(False, "replace a non-empty run directory")
    report: bool = _f(True, "write report.html at the end of training")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: str = _f("lora", "full | lora | qlora", choices=METHODS)
    lora: LoraConfig = field(default_factory=LoraConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    source = None  # the YAML file it was read from (not a field: not saved, not validated)

    @property
    def learning_rate(self) -> float:
        """The effective learning rate: the configured (or resolved) one; null in a config written
        before `auto` existed means the method's old default."""
        lr = self.train.learning_rate
        if isinstance(lr, str):
            raise ConfigError("train.learning_rate: auto is resolved when the model and data are loaded",
                              ["lmtune.hparams.resolve_for_run fills it in; or set a number"])
        return lr or DEFAULT_LR[self.method]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------- parsing and validation

def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list:
        return "a list of strings"
    return " or ".join(_type_name(a) for a in args) if args else str(tp)


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) with `value` converted to `tp` where that is lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return True, None
        # Scalar members first, so "all-linear" stays a string in `list[str] | str`.
        members = sorted((a for a in typing.get_args(tp) if a is not type(None)),
                         key=lambda a: typing.get_origin(a) is list)
        for arg in members:
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is list:
        if isinstance(value, str):
            return True, [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True, list(value)
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok, value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _check_range(key: str, value: Any, meta: dict, problems: list[str]) -> None:
    if meta.get("auto") and isinstance(value, str):   # a number, or the word auto (lmtune/hparams.py)
        if value != "auto":
            problems.append(f"{key}: got {value!r} (str), expected a number or auto")
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join("null" if c is None else str(c) for c in choices)
        problems.append(f"{key}: got {value!r}, allowed: {allowed}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):  # NaN compares false with every bound, inf passes a lone min
        problems.append(f"{key}: got {value!r}, must be a finite number")
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        op = ">" if meta.get("min_exclusive") else ">="
        problems.append(f"{key}: got {value!r}, must be {op} {lo}")
    elif hi is not None and value > hi:
        problems.append(f"{key}: got {value!r}, must be <= {hi}")


def _unknown(key: str, allowed: list[str]) -> str:
    name = key.rsplit(".", 1)[-1]
    prefix = key[: -len(name)]
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if not close:  # abbreviations such as `lr` for `learning_rate`
        close = [a for a in allowed if "".join(w[0] for w in a.split("_")) == name or a.startswith(name)][:1]
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"{key}: unknown key{hint}; allowed: {', '.join(allowed)}"


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a mapping, appending a message per problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            problems.append(_unknown(full, list(fields)))
            continue
        tp = hints[key]
        if _is_section(tp):
            kwargs[key] = _build(tp, value, f"{full}.", problems)
            continue
        ok, out = _coerce(value, tp)
        if not ok:
            problems.append(f"{full}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")
            continue
        _check_range(full, out, dict(fields[key].metadata), problems)
        kwargs[key] = out
    return cls(**kwargs)


def _check_cross(cfg: Config, problems: list[str]) -> None:
    """Rules that involve more than one key."""
    if cfg.lora.target_modules == [] or cfg.lora.target_modules == "":
        problems.append("lora.target_modules: empty; give module names or 'all-linear'")
    if isinstance(cfg.lora.target_modules, str) and cfg.lora.target_modules != "all-linear":
        cfg.lora.target_modules = [cfg.lora.target_modules]
    if cfg.data.task is None and not cfg.data.train:
        problems.append("data.train: no training data; set data.train to a file or data.task to sql/json")
    if cfg.train.max_steps == 0:
        problems.append("train.max_steps: got 0, which trains nothing; use -1 (train for train.epochs) or a "
                        "positive step count")
    replay = cfg.data.replay
    if replay.ratio > 0 and replay.source not in ("general", "self") and not Path(replay.source).exists():
        problems.append(f"data.replay.source: {replay.source!r} is not general, self or an existing file")
    if cfg.eval.forgetting_fail < cfg.eval.forgetting_warn:
        problems.append(f"eval.forgetting_fail: got {cfg.eval.forgetting_fail}, must be >= "
                        f"eval.forgetting_warn ({cfg.eval.forgetting_warn})")
    if isinstance(cfg.distributed.nproc, str) and cfg.distributed.nproc != "auto":
        problems.append(f"distributed.nproc: got {cfg.distributed.nproc!r}, expected a number >= 1 or auto")
    no_val = not cfg.data.validation and cfg.data.val_split == 0 and cfg.data.task is None
    if no_val and (cfg.train.eval_steps or cfg.train.early_stopping_patience):
        key = "train.eval_steps" if cfg.train.eval_steps else "train.early_stopping_patience"
        problems.append(f"{key}: needs validation data; set data.validation or data.val_split > 0")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.epochs=2", "lora.r=8"]` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{item!r}: overrides look like key.sub=value (e.g. train.epochs=2)")
            continue
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"{key}: '{part}' is both a value and a section")
                break
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError("bad command-line overrides", problems)
    return nested


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file",
                          ["pass the path of a YAML file, e.g. configs/tiny-sql-lora.yaml"])
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", ["pass the path of a YAML file, e.g. configs/tiny-sql-lora.yaml"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})",
                          ["check indentation (2 spaces per level) and quote values that contain ': ' or '#'"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}",
                          ["the top level holds sections such as model:, data:, train: (see configs/)"])
    return raw


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    problems: list[str] = []
    cfg = _build(Config, raw, "", problems)
    if not problems:
        _check_cross(cfg, problems)
    if problems:
        n = len(problems)
        raise ConfigError(f"{source}: {n} problem{'s' if n > 1 else ''} in the configuration", problems)
    return cfg


DATA_PATH_KEYS = ("train", "validation", "test")


def rebase_data_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative data.train/validation/test paths in a config file are relative to the file's folder
    (so `lmtune train configs/x.yaml` works from any directory); on the command line, relative to
    the working directory. Both are made absolute here, so the run's config.yaml runs anywhere."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    data = dict(data)
    for key in DATA_PATH_KEYS:
        value = data.get(key)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            continue
        fixed = [os.path.normpath(folder / os.path.expanduser(p)) if isinstance(p, str) and p
                 and not os.path.isabs(os.path.expanduser(p)) else p for p in items]
        data[key] = fixed[0] if isinstance(value, str) else fixed
    return {**raw, "data": data}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + overrides -> validated Config. Raises ConfigError listing every problem.
    Relative data paths in the file resolve against its folder (rebase_data_paths)."""
    raw = rebase_data_paths(read_yaml(path), Path(path).resolve().parent) if path else {}
    raw = _merge(raw, rebase_data_paths(parse_overrides(overrides or []), Path.cwd()))
    cfg = from_dict(raw, str(path) if path else "config")
    cfg.source = str(path) if path else None
    return cfg


def explain(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every field, for help texts and docs."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if _is_section(tp):
            rows += explain(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("doc", "")))
    return rows
