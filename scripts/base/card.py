"""Writing the model directory: weights, tokenizer, build_info.json and README.md."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import transformers
import tokenizers
from transformers import GenerationConfig

from .tokenizer import EOS, IM_END, PAD


def save(out: Path, model, tokenizer) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # A chat reply ends with <|im_end|>, a plain document with <|endoftext|>: stop on either.
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(IM_END)],
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD), do_sample=False, max_new_tokens=128)
    model.save_pretrained(out, safe_serialization=True)
    # chat_template inside tokenizer_config.json (not chat_template.jinja): read by every
    # transformers version that has chat templates, and by TRL.
    tokenizer.save_pretrained(out, save_jinja_files=False)


def build_info(*, args, arch, n_params, sched, result, data, heldout_ppl, times, device,
               tokenizer_path, mix) -> dict:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "name": "tiny", "seed": args.seed,
        "command": "python scripts/build_base.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        # the same build with its step count fixed (a --minutes build stops on the clock)
        "deterministic_command": _fixed_command(sys.argv[1:], result["tokens"]),
        "architecture": "LlamaForCausalLM", "arch": arch, "params": n_params,
        "vocab_size": args.vocab, "tokenizer_file": tokenizer_path.name,
        "data": data, "mix": mix,
        "schedule": {"steps": result["steps"], "batch_size": sched.batch_size,
                     "seq_len": sched.seq_len, "tokens_per_step": sched.batch_size * sched.seq_len,
                     "lr": sched.lr, "warmup_frac": sched.warmup_frac,
                     "min_lr_frac": sched.min_lr_frac, "weight_decay": sched.weight_decay,
                     "optimizer": "AdamW(betas=(0.9, 0.95)), clip 1.0, cosine",
                     "budget": {"minutes": args.minutes, "tokens": args.tokens}},
        "tokens_seen": result["tokens"],
        # passes over each source's training stream = tokens drawn from it / its size
        "epochs": {k: round(result["tokens"] * mix[k] / sum(mix.values()) / max(1, n), 2)
                   for k, n in data["train_tokens"].items()},
        "heldout_perplexity": heldout_ppl, "wall_time_s": times,
        "device": {"type": device.type, "name": dev, "torch_threads": torch.get_num_threads()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "history": sched.history,
    }


def _fixed_command(argv: list[str], tokens: int) -> str:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--minutes", "--tokens"):
            skip = True
            continue
        if a.startswith(("--minutes=", "--tokens=")):
            continue
        out.append(a)
    return "python scripts/build_base.py " + " ".join(shlex.quote(a) for a in out + ["--tokens", str(tokens)])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "cpu"


def write_info(out: Path, info: dict) -> None:
    tmp = out / "build_info.json.tmp"
    tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "build_info.json")
    (out / "README.md").write_text(readme(info), encoding="utf-8")


def readme(info: dict) -> str:
    a, s, d, ppl = info["arch"], info["schedule"], info["data"], info["heldout_perplexity"]
    tt = d["train_tokens"]
    synth = sum(v for k, v in tt.items() if k != "stdlib")
    mix = ", ".join(f"{k} {v:g}" for k, v in info["mix"].items())
    check = info.get("fine_tune_check")
    lines = [
        "# tiny: lmtune's embedded base model", "",
        "A small Llama-architecture causal LM that lmtune builds itself and ships, so the whole",
        "pipeline (train, evaluate, merge) runs offline on a laptop CPU. It is a *base*: it has",
        "seen English, Python documentation, question-to-SQL and text-to-JSON exercises, copying",
        "drills and the chat turn format, but it is not an assistant until you fine-tune it.", "",
        "Load it with plain transformers:", "",
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(path)",
        "model = AutoModelForCausalLM.from_pretrained(path)", "```", "",
        "## Facts", "",
        f"- parameters: {info['params']:,} (hidden {a['hidden']}, {a['layers']} layers, "
        f"{a['heads']} heads, MLP {a['intermediate']}, tied embeddings, context {a['max_positions']})",
        f"- tokenizer: byte-level BPE, {info['vocab_size']} tokens; `<|pad|>`=0, "
        "`<|endoftext|>`=1 (eos), `<|im_start|>`=2, `<|im_end|>`=3; no bos",
        "- pre-tokenization: letter runs, single digits, punctuation runs and whitespace are",
        "  separate, so a word has the same tokens in prose and inside quotes (copyable)",
        "- chat template: ChatML with `{% generation %}` markers around assistant replies",
        "  (TRL `assistant_only_loss`, transformers `return_assistant_tokens_mask`)",
        f"- pretraining: {info['tokens_seen']:,} tokens ({s['steps']} steps x "
        f"{s['tokens_per_step']} tokens, lr {s['lr']}, cosine), "
        f"mixture {mix}; passes over each source: " +
        ", ".join(f"{k} {v}" for k, v in info["epochs"].items()),
        f"- data: {d['stdlib_docs']['train']} stdlib docstrings, comment paragraphs and reference pages "
        f"({tt['stdlib']:,} tokens) + {d['synth_docs']['train']:,} generated documents "
        f"({synth:,} tokens: prose and copying, SQL over library/sensor/flight/school/recipe "
        "tables, sentence-to-JSON); the bundled tasks' data is never used",
        f"- held-out perplexity ({s['seq_len']}-token windows): {ppl['all']} overall; " +
        ", ".join(f"{k} {v}" for k, v in ppl.items() if k != "all"),
        f"- built on {info['device']['name']} ({info['device']['type']}) in "
        f"{info['wall_time_s']['total_s']} s, seed {info['seed']}", "",
        "Built with:", "", "```", info["command"], "```", "",
        "A build on a time budget stops on the clock; this replays it step for step (same seed,",
        "same software and hardware give the same weights up to floating-point reduction order):",
        "", "```", info["deterministic_command"], "```", "",
    ]
    if check:
        lines += ["## Is it a useful base?", "", check["summary"], ""]
    lines += ["`build_info.json` holds the full recipe, the data sizes and the loss/perplexity history."]
    return "\n".join(lines) + "\n"
