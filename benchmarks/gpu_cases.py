"""One GPU-suite case, run in its own process: build a random-init Llama from a config (no
downloads), train a few steps with the case's recipe, measure tokens/s, peak memory and MFU.

Recipes:
    peft-padded  HF + PEFT, the seed's recipe: transformers Trainer + peft LoRA, every example padded
                 to seq_len, labels = input_ids (what DataCollatorForLanguageModeling(mlm=False) gives)
    trl-packed   TRL SFTTrainer at its best: pre-tokenized input_ids + completion_mask, packing bfd
                 (padding-free), completion-only loss; `liger` adds use_liger_kernel
    lmtune       lmtune's own pieces: lmtune.train.methods.prepare (QLoRA: embeddings, norms and head stay
                 bf16), lmtune.trainer.LmtuneSFTTrainer, the optimizer lmtune picks on CUDA
                 (adamw_torch_fused; paged_adamw_8bit for QLoRA), packing bfd as above
    unsloth      Unsloth's FastLanguageModel (its own environment: --unsloth-site first on the
                 path), LoRA through FastLanguageModel.get_peft_model (dropout 0, its fast path), TRL's
                 SFTTrainer as Unsloth patches it, packing bfd as above
    methods      lora: 16-bit frozen base, fp32 adapters, bf16 autocast; full: fp32 master weights,
                 bf16 autocast; qlora: NF4 + double quant, bf16 compute and storage; peft-padded and
                 trl-packed prepare it with peft's prepare_model_for_kbit_training (non-4-bit parts to
                 fp32), paged_adamw_8bit (lmtune's CUDA default for qlora)

MFU (model FLOPs utilisation) counts only useful tokens (padding is waste, not work):
    full   6 N + 12 L d T       per token (Chowdhery et al. 2022, PaLM, appendix B; the nanoGPT
    LoRA   4 N + 6 N_lora + 12 L d T   `estimate_mfu` uses the same 6N + 12LHQT form)
N = parameters doing matmuls (all but the input embedding), L layers, d hidden size, T the length of
the token's own document (attention is block-diagonal per packed example; PaLM's non-causal
count). LoRA: a frozen weight costs 2N forward + 2N for the input gradient, no weight gradient.
Peak: 989 TFLOP/s dense bf16 for an H100/H200 SXM (NVIDIA H200 datasheet), --peak-tflops to change.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SHAPES = {
    # Meta-Llama-3-8B config.json (random weights here)
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False),
    # Llama-3.2-3B and -1B config.json
    "llama3-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    "llama3-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    # --smoke on CPU
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False),
}
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]   # = all-linear in a Llama


@dataclasses.dataclass
class Case:
    name: str
    shape: str
    recipe: str = "trl-packed"       # trl-packed | peft-padded | lmtune | unsloth
    method: str = "lora"             # full | lora | qlora
    liger: bool = False
    batch: int = 8                   # micro-batch: packed rows (trl) or padded examples (peft)
    grad_accum: int = 1
    seq_len: int = 512
    warmup_steps: int = 2            # optimizer steps not timed (CUDA/cuBLAS warm-up)
    steps: int = 6                   # timed optimizer steps
    min_len: int = 76                # example lengths: the bundled SQL task's range (tokens)
    max_len: int = 119
    completion_share: float = 0.3
    attn: str = "sdpa"
    smoke: bool = False
    work: str = "/tmp/lmtune-gpu-suite"
    peak_tflops: float = 989.0
    seed: int = 0


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def make_args(cls, dropped: list[str], **kw):
    """TrainingArguments/SFTConfig across transformers 5.17..5.24 and TRL versions: gradient
    checkpointing was renamed activation_checkpointing; unknown kwargs are dropped and reported."""
    names = _fields(cls)
    if "activation_checkpointing" not in names and "activation_checkpointing" in kw:
        kw["gradient_checkpointing"] = kw.pop("activation_checkpointing")
    for key in [k for k in kw if k not in names]:
        dropped.append(key)
        kw.pop(key)
    return cls(**kw)


def synthetic_examples(c: Case, vocab: int, count: int) -> tuple[list[list[int]], list[list[int]]]:
    """Random token ids with lengths drawn from [min_len, max_len]; the last share is the answer."""
    rng = random.Random(c.seed)
    ids, masks = [], []
    for _ in range(count):
        n = rng.randint(c.min_len, c.max_len)
        k = max(1, int(n * c.completion_share))
        ids.append([rng.randrange(3, vocab) for _ in range(n)])
        masks.append([0] * (n - k) + [1] * k)
    return ids, masks


def tiny_tokenizer():
    """A 3-token tokenizer (pad, eos, unk): the trainers want one; the data is already token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def build_model(c: Case, device: str):
    """Random-init Llama on `device` in the dtype lmtune would load it in for this method."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[c.shape], max_position_embeddings=max(2048, c.seq_len),
                      pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(c.seed)
    cuda = device == "cuda"
    dtype = torch.bfloat16 if (cuda and c.method != "full") else torch.float32
    if c.recipe == "unsloth":
        return _unsloth_model(c, cfg), cfg
    if c.method == "qlora":
        return _quantized(c, cfg, device), cfg
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=c.attn)
    return model, cfg


def _saved(c: Case, cfg, device: str) -> Path:
    """The random model saved once per shape (bf16 on CUDA) with a tokenizer, for from_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(c.work) / f"{c.shape}-seed{c.seed}"
    if not (path / "config.json").is_file():
        with torch.device(device):
            tmp = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        tmp.save_pretrained(str(path), safe_serialization=True)
        tiny_tokenizer().save_pretrained(str(path))
        del tmp
        if device == "cuda":
            torch.cuda.empty_cache()
    return path


def _quantized(c: Case, cfg, device: str):
    """QLoRA needs from_pretrained: save the random bf16 model once, reload it in 4-bit."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = _saved(c, cfg, device)
    compute = torch.bfloat16 if device == "cuda" else torch.float32
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)
    model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=bnb, dtype=compute,
                                                 device_map={"": 0} if device == "cuda" else {"": "cpu"},
                                                 attn_implementation=c.attn)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the bf16 copy written to disk is not part of the run
    return model


def _unsloth_model(c: Case, cfg):
    """Unsloth's loader and LoRA (CUDA only). unsloth was imported first (child_main)."""
    import torch
    from unsloth import FastLanguageModel

    path = _saved(c, cfg, "cuda")
    model, _ = FastLanguageModel.from_pretrained(model_name=str(path), max_seq_length=c.seq_len,
                                                 dtype=torch.bfloat16, load_in_4bit=c.method == "qlora")
    torch.cuda.reset_peak_memory_stats()
    return FastLanguageModel.get_peft_model(
        model, r=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=0.0, target_modules=SEVEN,
        use_gradient_checkpointing=False, random_state=c.seed)


def _lmtune_config(c: Case):
    sys.path.insert(0, str(REPO / "src"))
    from lmtune.config import from_dict

    return from_dict({"model": {"name_or_path": str(Path(c.work) / "model")}, "method": c.method,
                      "data": {"task": "sql"}, "train": {"batch_size": c.batch, "grad_accum": c.grad_accum}})


class Counter:
    """Wraps the trainer's collator: useful (non-pad) tokens, all positions, and per-step marks."""

    def __init__(self, inner):
        self.inner, self.tokens, self.slots = inner, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch.get("attention_mask")
        self.slots += batch["input_ids"].numel()
        self.tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        return batch


def step_timer(counter: Counter, cuda: bool):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks: list[tuple[int, float, int, int]] = []  # (step, time, tokens so far, slots so far)

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                import torch

                torch.cuda.synchronize()
            self.marks.append((state.global_step, time.perf_counter(), counter.tokens, counter.slots))

    return StepTimer()


def _train_dataset(c: Case, vocab: int, rows_needed: int):
    """Enough synthetic examples for every micro-batch of the run (plus slack)."""
    from datasets import Dataset

    packed = c.recipe != "peft-padded"
    per_row = max(1, c.seq_len // ((c.min_len + c.max_len) // 2)) if packed else 1
    ids, masks = synthetic_examples(c, vocab, int(rows_needed * per_row * 1.3) + 8)
    if packed:
        return Dataset.from_dict({"input_ids": ids, "completion_mask": masks}), ids
    pad = lambda seq, v: seq[: c.seq_len] + [v] * max(0, c.seq_len - len(seq))  # noqa: E731
    return Dataset.from_dict({
        "input_ids": [pad(s, 0) for s in ids],
        "attention_mask": [pad([1] * len(s), 0) for s in ids],
        "labels": [pad(s, -100) for s in ids],   # loss on prompt and answer, pads ignored (the seed)
    }), ids


def build_trainer(c: Case, model, cfg, device: str, dropped: list[str]):
    """The case's trainer over enough data for warmup + timed steps."""
    import torch

    cuda = device == "cuda"
    total_steps = c.warmup_steps + c.steps
    data, ids = _train_dataset(c, cfg.vocab_size, total_steps * c.batch * c.grad_accum)
    optim = "paged_adamw_8bit" if (c.method == "qlora" and cuda) else "adamw_torch"
    if c.recipe == "lmtune" and c.method != "qlora" and cuda:
        optim = "adamw_torch_fused"      # lmtune.train.arguments.choose_optimizer on CUDA
    common = dict(output_dir=str(Path(c.work) / "out" / c.name), max_steps=total_steps, learning_rate=1e-4,
                  per_device_train_batch_size=c.batch, gradient_accumulation_steps=c.grad_accum,
                  warmup_steps=0, logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
                  bf16=cuda, use_cpu=not cuda, activation_checkpointing=False, optim=optim, seed=c.seed,
                  dataloader_num_workers=0, disable_tqdm=True, use_liger_kernel=c.liger)
    if c.recipe == "lmtune" and c.method != "full":
        from lmtune.train.methods import prepare

        model = prepare(model, _lmtune_config(c))
    elif c.method != "full" and c.recipe != "unsloth":     # unsloth: get_peft_model in _unsloth_model
        model = _attach_lora(c, model)
    if c.recipe == "peft-padded":
        from transformers import Trainer, TrainingArguments, default_data_collator

        args = make_args(TrainingArguments, dropped, **common)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
    else:
        from trl import SFTConfig, SFTTrainer

        args = make_args(SFTConfig, dropped, **common, max_length=c.seq_len, packing=True,
                         packing_strategy="bfd", completion_only_loss=True)
        cls = SFTTrainer
        if c.recipe == "lmtune":
            from lmtune.trainer import LmtuneSFTTrainer

            cls = lambda **kw: LmtuneSFTTrainer(lm_head="fused", **kw)  # noqa: E731  (CUDA default)
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tiny_tokenizer())
    del torch
    return trainer, ids


def _attach_lora(c: Case, model):
    from peft import LoraConfig, get_peft_model

    if c.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, LoraConfig(**LORA))


def matmul_params(cfg) -> int:
    """Weights that do matmuls in a Llama (from the config, so 4-bit packing does not matter): the
    attention and MLP projections of every layer and the LM head; not the embedding lookup."""
    d, hd = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    attn = d * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    mlp = 3 * d * cfg.intermediate_size
    return cfg.num_hidden_layers * (attn + mlp) + cfg.vocab_size * d


def flops_per_token(c: Case, cfg, model, doc_lengths: list[int]) -> dict:
    """PaLM-style model FLOPs per useful token (see module doc)."""
    n = matmul_params(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dense = 6 * n if c.method == "full" else 4 * n + 6 * trainable
    t_mean = sum(x * x for x in doc_lengths) / max(1, sum(doc_lengths))  # token-weighted document length
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * t_mean
    return {"n_matmul": n, "trainable": trainable, "flops_per_token": dense + attn,
            "attn_share": round(attn / (dense + attn), 4)}


def predicted_memory(c: Case, cfg, device: str) -> dict | None:
    """lmtune's estimate for this case, when src/lmtune/estimate is importable (else None)."""
    try:
        sys.path.insert(0, str(REPO / "src"))
        from lmtune.estimate import LoraSpec, RunSpec, memory_breakdown, shape_from_config
    except Exception as exc:  # noqa: BLE001 - missing or incompatible: the suite still runs
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    try:
        shape = shape_from_config(cfg.to_dict(), f"{c.shape} config")
        # peft's prepare_model_for_kbit_training keeps QLoRA's non-4-bit parts in fp32; lmtune in bf16
        wdtype = "fp32" if (c.method == "qlora" and c.recipe in ("peft-padded", "trl-packed")) else "auto"
        spec = RunSpec(method=c.method, seq_len=c.seq_len, batch=c.batch, grad_accum=c.grad_accum,
                       lora=LoraSpec(r=LORA["r"], dropout=LORA["lora_dropout"]), weights_dtype=wdtype,
                       loss="plain" if c.recipe == "peft-padded" else "fused")
        mem = memory_breakdown(shape, spec, device)
        return {"peak_gib": round(mem.peak / 2**30, 3),
                "tensors_gib": round((mem.peak - mem.overhead) / 2**30, 3), "breakdown_gib": mem.as_gib()}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "liger-kernel",
                 "unsloth", "unsloth_zoo"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def run_case(c: Case) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not c.smoke
    device = "cuda" if cuda else "cpu"
    row = {"case": c.name, "shape": c.shape, "recipe": c.recipe, "method": c.method, "liger": c.liger,
           "attn": c.attn, "batch": c.batch, "grad_accum": c.grad_accum, "seq_len": c.seq_len,
           "device": torch.cuda.get_device_name(0) if cuda else "cpu", "versions": versions()}
    t0 = time.perf_counter()
    model, cfg = build_model(c, device)
    dropped: list[str] = []
    trainer, ids = build_trainer(c, model, cfg, device, dropped)
    counter = Counter(trainer.data_collator)
    trainer.data_collator = counter
    timer = step_timer(counter, cuda)
    trainer.add_callback(timer)
    row["setup_s"] = round(time.perf_counter() - t0, 2)
    trainer.train()
    marks = timer.marks
    first = marks[c.warmup_steps - 1] if c.warmup_steps else (0, t0, 0, 0)  # end of warm-up
    last = marks[-1]
    secs, tokens, slots = last[1] - first[1], last[2] - first[2], last[3] - first[3]
    lengths = [len(s) for s in ids]
    f = flops_per_token(c, cfg, trainer.model, lengths)
    tps = tokens / secs if secs > 0 else 0.0
    row.update(steps_timed=len(marks) - c.warmup_steps, seconds_timed=round(secs, 3), tokens=tokens,
               slots=slots, pad_share=round(1 - tokens / slots, 3) if slots else None,
               tokens_per_s=round(tps, 1), **f,
               achieved_tflops=round(tps * f["flops_per_token"] / 1e12, 2),
               mfu=round(tps * f["flops_per_token"] / (c.peak_tflops * 1e12), 4) if cuda else None,
               dropped_kwargs=dropped, total_s=round(time.perf_counter() - t0, 2))
    if cuda:
        row.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 3))
    else:
        import resource

        row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    row["predicted"] = predicted_memory(c, cfg, device)
    return row


def child_main(spec: str, out_file: str) -> int:
    case = Case(**json.loads(spec))
    if case.recipe == "unsloth":
        import unsloth  # noqa: F401  (Unsloth patches transformers, peft and trl: import it first)
    row = run_case(case)
    Path(out_file).write_text(json.dumps(row))
    return 0
