"""Typed run configuration: a YAML file plus `key.sub=value` overrides -> `Config`.

Each section is a pydantic dataclass: a field's `Field(description=...)` is its one-line doc (shown
by `lmtune config show --explain`), its type or `Literal` says what is allowed and `ge`/`gt`/`le`
its range. pydantic checks every field at once; `config/messages.py` turns its errors into one line per key,
naming the key as the user typed it, what was given and what is allowed. They stay stdlib
dataclasses (`dataclasses.asdict`/`replace` keep working), and `lmtune --help` does not import this
module: only commands that read a config pay for pydantic.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from lmtune.config.cross import check_cross
from lmtune.config.messages import hints, is_section, problems_by_key
from lmtune.errors import ConfigError

Method = Literal["full", "lora", "qlora"]
METHODS = typing.get_args(Method)
Objective = Literal["sft", "dpo", "orpo", "kto", "grpo"]
OBJECTIVES = typing.get_args(Objective)
# What `learning_rate: null` meant before `auto` (configs and runs written by older lmtune versions).
DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "qlora": 2e-4}


def _number(value: Any) -> Any:
    """Integers and numeric strings (YAML 1.1 reads "2e-4" as a string) become floats."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _auto_word(value: str) -> str:
    if value != "auto":
        raise PydanticCustomError("not_auto", "expected a number or auto")
    return value


# Strict types: a YAML `yes`, `"16"` or `2.0` where true/false or an integer belongs is refused, not cast.
Bool = Annotated[bool, Strict()]
Int = Annotated[int, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, Strict(), BeforeValidator(_number)]
Paths = Annotated[list[Str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]   # one file or a list
Auto = Annotated[str, Strict(), AfterValidator(_auto_word)]   # the one word a numeric field also takes
Positive = Annotated[float, Strict(), Field(gt=0.0)]
_S = TypeVar("_S")
Section = Annotated[_S, BeforeValidator(lambda v: {} if v is None else v)]   # `lora:` alone: the defaults
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
# defer_build: each validator is built when first used, so a command that imports these classes
# without validating a config (report, compare, config show --explain) does not pay for building them.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)


@dataclass(config=STRICT)
class ModelConfig:
    name_or_path: Str = Field("tiny", description="Hub id, local directory, or 'tiny' (the embedded base)")
    revision: Str | None = Field(None, description="Hub revision (branch, tag or commit) to load")
    dtype: Dtype = Field("auto", description="weights dtype: auto picks bf16/fp16 on GPU, fp32 on CPU")
    trust_remote_code: Bool = Field(False, description="run Python code shipped with the model (only if you trust it)")
    allow_pickle: Bool = Field(False, description="allow loading pickle weights (.bin/.pt); safetensors otherwise")
    attn_implementation: Str | None = Field(None, description="attention kernel: sdpa, eager, flash_attention_2")


@dataclass(config=STRICT)
class ReplayConfig:
    ratio: Float = Field(0.0, ge=0.0, le=10.0, description="general examples mixed into the training split per "
                         "training example (0.25: one for every four); never into validation or test. 0: off")
    source: Str = Field("general", description="general (bundled general text, not the forgetting probe), self (the "
                        "base model's own greedy answers to bundled general prompts, generated before training), or "
                        "a file of examples in any training format")
    max_new_tokens: Int = Field(96, ge=1, description="source self: tokens generated per answer")


@dataclass(config=STRICT)
class DataConfig:
    task: Literal[None, "sql", "json", "catalogue"] = Field(
        None, description="bundled task (sql, json, catalogue): fills train/validation/test and the metric")
    train: Paths = Field(default_factory=list, description="training files or directories (jsonl, json, csv, parquet)")
    validation: Paths = Field(default_factory=list, description="validation files; empty -> split val_split off train")
    test: Paths = Field(default_factory=list, description="test files for generation metrics in `lmtune eval`")
    val_split: Float = Field(0.05, ge=0.0, le=0.5,
                             description="share of train held out for validation when no file is given")
    test_size: Annotated[Int, Field(ge=0)] | None = Field(
        None, description="examples of train held out as the test split when there is no data.test and no "
                          "data.task (None: 10%, 20..200; 0: none)")
    format: Literal["auto", "alpaca", "chat", "prompt_completion", "text"] = Field("auto", description="record format")
    template: Literal["auto", "alpaca", "chatml", "model"] = Field(
        "auto", description="prompt template: auto uses the model's chat template if it has one")
    max_length: Int = Field(512, ge=8,
                            description="longest sequence in tokens; longer examples are truncated (counted)")
    packing: Bool = Field(True, description="pack several examples per row (TRL, best-fit decreasing)")
    train_on_prompt: Bool = Field(False, description="also compute the loss on prompt tokens")
    dedupe: Bool = Field(True, description="drop exact duplicate examples (count reported)")
    system_prompt: Str | None = Field(None, description="system message added to every example without one")
    seed: Int = Field(42, ge=0, description="seed for the train/validation split")
    cache: Bool = Field(True, description="reuse prepared (tokenized) data from lmtune's cache when the data files, "
                        "tokenizer, template and data settings are unchanged (docs/own-data.md: the data cache)")
    replay: Section[ReplayConfig] = Field(default_factory=ReplayConfig)


@dataclass(config=STRICT)
class LoraConfig:
    r: Int = Field(16, ge=1, description="LoRA rank")
    alpha: Int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r; rule of thumb 2 x r)")
    dropout: Float = Field(0.05, ge=0.0, le=0.9, description="dropout on the LoRA path")
    target_modules: list[Str] | Str = Field("all-linear", description="module names, or all-linear")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases to train")
    use_dora: Bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: Bool = Field(False, description="rank-stabilised scaling alpha/sqrt(r)")


@dataclass(config=STRICT)
class QuantConfig:
    type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type")
    double_quant: Bool = Field(True, description="also quantize the quantization constants (saves ~0.4 bit/param)")
    compute_dtype: Dtype = Field("auto", description="matmul dtype: auto = bf16 on bf16 GPUs, fp16 on older, "
                                                     "fp32 on CPU")


@dataclass(config=STRICT)
class TrainConfig:
    epochs: Annotated[Positive | Auto, BeforeValidator(_number)] = Field(
        "auto", description="passes over the training data; auto: from the example count with a floor on "
                            "optimizer steps (lmtune/train/hparams.py)")
    max_steps: Int = Field(-1, ge=-1, description="stop after this many optimizer steps (-1: use epochs)")
    learning_rate: Annotated[Positive | Auto | None, BeforeValidator(_number)] = Field(
        "auto", description="peak LR; auto: from the method and the model's width (lmtune/train/hparams.py; 2e-4 for "
                            "LoRA at 7-8B)")
    batch_size: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="examples (or packed rows) per device per micro-batch; None: 1 on CPU (measured "
                          "fastest, half the memory), 4 on GPUs")
    grad_accum: Int = Field(4, ge=1, description="micro-batches per optimizer step")
    rows_per_step: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="examples (or packed rows) per optimizer step over all processes; when set, grad_accum "
                          "is derived from it (rows_per_step / (batch_size x processes)), so the step stays the "
                          "same whatever distributed.nproc resolves to")
    eval_batch_size: Int = Field(8, ge=1, description="batch size for evaluation")
    warmup_ratio: Float = Field(0.1, ge=0.0, le=1.0, description="share of steps spent warming up the LR")
    warmup_steps: Int = Field(0, ge=0, description="warmup steps (overrides warmup_ratio when > 0)")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts"] = Field(
        "cosine", description="LR schedule")
    weight_decay: Float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: Float = Field(1.0, ge=0.0, description="gradient clipping norm (0 disables)")
    optimizer: Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
                       "paged_adamw_32bit", "sgd", "adafactor"] = Field(
        "auto", description="auto = adamw_torch, paged_adamw_8bit for qlora on CUDA")
    precision: Dtype = Field("auto", description="auto = bf16 where supported, fp16 on older GPUs, fp32 on CPU")
    gradient_checkpointing: Bool = Field(False, description="recompute activations in backward to save memory")
    logging_steps: Int = Field(5, ge=1, description="log loss/LR every N optimizer steps")
    eval_steps: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="evaluate every N steps (None: once per epoch)")
    save_steps: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="checkpoint every N steps (None: once per epoch)")
    save_total_limit: Int = Field(2, ge=1, description="checkpoints kept on disk (the best is always kept)")
    load_best: Bool = Field(True, description="end with the checkpoint of lowest validation loss")
    early_stopping_patience: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="stop after N evaluations without improvement")
    seed: Int = Field(42, ge=0, description="seed for initialisation, shuffling and dropout")
    objective: Objective = Field(
        "sft", description="what the run optimises: sft (next-token loss on answers), dpo or orpo (preference "
                           "pairs: prompt, chosen, rejected), kto (prompt, completion, label), grpo (sampled "
                           "answers scored by rl.reward); any method (docs/preference.md)")
    threads: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="CPU threads for torch per process (None: 1 for models with hidden size under 1024 "
                          "under passive OpenMP waiting, else torch's choice; OMP_NUM_THREADS wins; "
                          "lmtune/train/cpu_tuning.py)")
    lm_head: Literal["auto", "label_logits", "fused"] = Field(
        "auto", description="how the loss runs the LM head: label_logits (the model's own head and "
                            "cross-entropy, only where a label is set: faster on CPU), fused (TRL's chunked "
                            "kernel: never holds full-vocabulary logits, logs entropy); auto: label_logits on "
                            "CPU, fused on GPUs")
    keep_freed_memory: Bool = Field(True, description="CPU: keep memory torch frees for reuse instead of returning "
                                    "it to the OS each step (faster steps, higher peak RSS; glibc only)")
    omp_wait_policy: Literal["passive", "active"] = Field(
        "passive", description="OpenMP threads waiting for work: passive (sleep; safe when other jobs share the "
                               "cores) or active (spin); OMP_WAIT_POLICY wins")

    def lm_head_for(self, device_kind: str) -> str:
        """lm_head, or its default for the device: GPUs keep TRL's memory-saving fused head."""
        if self.lm_head != "auto":
            return self.lm_head
        return "label_logits" if device_kind == "cpu" else "fused"

    def micro_batch(self, device_kind: str) -> int:
        """batch_size, or its default for the device: one packed row on CPU was faster than four at
        half the peak RSS (benchmarks/README.md); GPUs want wider batches."""
        default = 1 if device_kind == "cpu" else 4
        if self.objective == "kto":   # its KL term pairs each answer with another of the same micro-batch
            default = max(default, 2)
        return self.batch_size or default


@dataclass(config=STRICT)
class PrefConfig:
    beta: Float = Field(0.1, gt=0.0, description="dpo/kto: how far the model may move from the reference "
                        "(higher: closer); orpo: weight of the odds-ratio term next to the answer loss (TRL's "
                        "default 0.1 for all three)")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "sigmoid_norm"] = Field(
        "sigmoid", description="dpo: sigmoid (the DPO paper), ipo, hinge, robust, apo_zero or sigmoid_norm "
                               "(TRL's names)")
    label_smoothing: Float = Field(0.0, ge=0.0, lt=0.5, description="dpo with loss_type robust: the assumed "
                                   "share of pairs whose preference is flipped")
    sft_weight: Float = Field(0.0, ge=0.0, description="dpo: weight of the chosen answers' own loss (TRL's "
                              "sft loss: their mean token negative log-likelihood) added to the preference loss; "
                              "keeps the chosen answers likely (RPO). 0: off")
    desirable_weight: Float = Field(1.0, gt=0.0, description="kto: weight of examples labelled true")
    undesirable_weight: Float = Field(1.0, gt=0.0, description="kto: weight of examples labelled false")


@dataclass(config=STRICT)
class RlConfig:
    reward: Annotated[list[Str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        default_factory=lambda: ["task", "format"],
        description="grpo: rewards summed per sampled answer: task (the task's own metric against the record's "
                    "answer, partial credit), format (well-formed: SQL runs, JSON parses), length (longer than "
                    "the reference costs up to 1), or path/to/file.py:function (your own code)")
    reward_weights: list[Float] | None = Field(None, description="grpo: one weight per rl.reward (None: all 1)")
    text_metric: Literal["exact_match", "rouge_l"] = Field(
        "exact_match", description="grpo: the task reward on data without a bundled task: exact match or ROUGE-L F1")
    num_generations: Int = Field(4, ge=2, description="grpo: answers sampled per prompt; each is scored against "
                                 "the others of its group (TRL's default is 8; 4 keeps CPU steps short)")
    max_new_tokens: Int = Field(64, ge=1, description="grpo: tokens sampled per answer at most")
    temperature: Float = Field(1.0, gt=0.0, description="grpo: sampling temperature (TRL's default)")
    beta: Float = Field(0.04, ge=0.0, description="grpo: weight of the KL penalty against the start (the GRPO "
                        "paper's 0.04); 0 drops the reference (TRL's default) and its forward pass")
    use_vllm: Bool = Field(False, description="grpo: sample with vLLM (TRL's use_vllm) instead of "
                           "model.generate; needs CUDA and the vllm package")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="grpo with rl.use_vllm: colocate (vLLM in the training process, sharing its GPU) "
                                "or server (a `trl vllm-serve` you started)")
    vllm_server_base_url: Str | None = Field(
        None, description="grpo, rl.vllm_mode server: the server's URL (None: TRL's http://0.0.0.0:8000)")
    vllm_gpu_memory_utilization: Annotated[Float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="grpo, rl.vllm_mode colocate: share of GPU memory vLLM takes (None: TRL's 0.3)")


@dataclass(config=STRICT)
class EvalConfig:
    after_train: Bool = Field(True, description="at the end of train: validation loss, task metrics base vs tuned, "
                                                "forgetting")
    final_val_loss: Bool = Field(False, description="measure the validation loss at the end of train "
                                                    "(train_summary.json eval_loss) even when eval.after_train "
                                                    "is false (sweep trials do)")
    max_new_tokens: Int = Field(128, ge=1, description="tokens generated per test prompt")
    num_samples: Annotated[Int, Field(ge=1)] | None = Field(
        None, description="score only the first N test examples (None: all)")
    few_shot: Int = Field(0, ge=0, description="solved training examples shown before each test prompt "
                                               "(0: zero-shot)")
    forgetting_check: Bool = Field(True, description="perplexity on general text before vs after training")
    forgetting_warn: Float = Field(1.5, ge=1.0, description="perplexity ratio after/before above which to warn")
    forgetting_fail: Float = Field(3.0, ge=1.0, description="perplexity ratio above which the model has forgotten")


@dataclass(config=STRICT)
class DistributedConfig:
    backend: Literal["none", "ddp", "fsdp", "deepspeed"] = Field(
        "none", description="none (one process), ddp, fsdp or deepspeed")
    # a string other than auto is refused in config/cross.py, with the message that names both
    nproc: Annotated[Int, Field(ge=1)] | Str = Field(
        1, description="processes per machine (GPUs, or CPU workers for ddp); auto: one per GPU, else one "
                       "single-threaded worker per core for models below hidden size 1024 (else 1), as many as "
                       "divide train.rows_per_step")
    nnodes: Int = Field(1, ge=1, description="number of machines")
    node_rank: Int = Field(0, ge=0, description="this machine's rank among nnodes")
    master_addr: Str = Field("127.0.0.1", description="address of the rank-0 machine")
    master_port: Int = Field(29500, ge=1, le=65535, description="port on the rank-0 machine")
    deepspeed_config: Str | None = Field(None, description="DeepSpeed JSON (default: shipped ZeRO-2 for deepspeed)")
    fsdp: Str = Field("full_shard auto_wrap", description="FSDP options passed to the Trainer")


@dataclass(config=STRICT)
class OutputConfig:
    dir: Str = Field("runs/latest", description="run directory")
    overwrite: Bool = Field(False, description="replace a non-empty run directory")
    report: Bool = Field(True, description="write report.html at the end of training")


@dataclass(config=STRICT)
class RagConfig:
    docs: Str | None = Field(None, description="documents to retrieve from: a JSONL of {id, text} records, or a "
                             "folder of .txt/.md files (None: no retrieval; docs/rag.md)")
    chunk_tokens: Int = Field(128, ge=8, description="passage length in tokens of the run's tokenizer")
    chunk_overlap: Int = Field(16, ge=0, description="tokens each passage shares with the one before it")
    top_k: Int = Field(3, ge=1, description="passages put before each question")
    retriever: Literal["bm25"] = Field("bm25", description="how passages are found: bm25 (word overlap; needs "
                                       "no model)")
    train_gold: Float = Field(1.0, ge=0.0, le=1.0, description="at train: share of examples whose passages "
                              "include the gold one (the passage matching question and answer); the rest get "
                              "distractors only (RAFT). 1: always (docs/rag-training.md)")
    seed: Int = Field(42, ge=0, description="at train: seed of which examples get the gold passage")
    eval_docs: Str | None = Field(None, description="documents the evaluation retrieves from (after train, and "
                                  "`lmtune eval` without --docs), e.g. the catalogue as it is now (None: rag.docs)")


@dataclass(config=STRICT)
class Config:
    model: Section[ModelConfig] = Field(default_factory=ModelConfig)
    data: Section[DataConfig] = Field(default_factory=DataConfig)
    method: Method = Field("lora", description="full | lora | qlora")
    lora: Section[LoraConfig] = Field(default_factory=LoraConfig)
    quant: Section[QuantConfig] = Field(default_factory=QuantConfig)
    train: Section[TrainConfig] = Field(default_factory=TrainConfig)
    pref: Section[PrefConfig] = Field(default_factory=PrefConfig)
    rl: Section[RlConfig] = Field(default_factory=RlConfig)
    eval: Section[EvalConfig] = Field(default_factory=EvalConfig)
    distributed: Section[DistributedConfig] = Field(default_factory=DistributedConfig)
    output: Section[OutputConfig] = Field(default_factory=OutputConfig)
    rag: Section[RagConfig] = Field(default_factory=RagConfig)
    source = None  # the YAML file it was read from (not a field: not saved, not validated)

    @property
    def learning_rate(self) -> float:
        """The effective learning rate: the configured (or resolved) one; null in a config written
        before `auto` existed means the method's old default."""
        lr = self.train.learning_rate
        if isinstance(lr, str):
            raise ConfigError("train.learning_rate: auto is resolved when the model and data are loaded",
                              ["lmtune.train.hparams.resolve_for_run fills it in; or set a number"])
        return lr or DEFAULT_LR[self.method]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


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


@functools.cache
def _validator() -> TypeAdapter:
    return TypeAdapter(Config)


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    problems: list[str] = []
    if not isinstance(raw, dict):
        problems.append(f"config: expected a mapping of keys, got {raw!r}")
    else:
        try:
            cfg = _validator().validate_python(raw)
        except ValidationError as exc:
            problems = problems_by_key(exc, raw, Config)
        if not problems:
            check_cross(cfg, problems)
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
        return _rebase_rag_docs(raw, folder)
    data = dict(data)
    for key in DATA_PATH_KEYS:
        value = data.get(key)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            continue
        fixed = [os.path.normpath(folder / os.path.expanduser(p)) if isinstance(p, str) and p
                 and not os.path.isabs(os.path.expanduser(p)) else p for p in items]
        data[key] = fixed[0] if isinstance(value, str) else fixed
    return _rebase_rag_docs({**raw, "data": data}, folder)


def _rebase_rag_docs(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """rag.docs and rag.eval_docs resolve like the data paths (rebase_data_paths)."""
    rag = raw.get("rag")
    if not isinstance(rag, dict):
        return raw
    rag = dict(rag)
    for key in ("docs", "eval_docs"):
        docs = rag.get(key)
        if isinstance(docs, str) and docs and not os.path.isabs(os.path.expanduser(docs)):
            rag[key] = os.path.normpath(folder / os.path.expanduser(docs))
    return {**raw, "rag": rag}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + overrides -> validated Config. Raises ConfigError listing every problem.
    Relative data paths in the file resolve against its folder (rebase_data_paths)."""
    raw = rebase_data_paths(read_yaml(path), Path(path).resolve().parent) if path else {}
    raw = _merge(raw, rebase_data_paths(parse_overrides(overrides or []), Path.cwd()))
    cfg = from_dict(raw, str(path) if path else "config")
    cfg.source = str(path) if path else None
    return cfg


def explain(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every field, for help texts and docs: the docs are the fields' descriptions."""
    rows = []
    for name, info in cls.__pydantic_fields__.items():
        tp = hints(cls)[name]
        if is_section(tp):
            rows += explain(tp, f"{prefix}{name}.")
            continue
        rows.append((f"{prefix}{name}", repr(info.get_default(call_default_factory=True)), info.description or ""))
    return rows
