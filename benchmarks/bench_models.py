"""Models the CPU benchmarks train, built locally (no Hub): the embedded base, or a random-init
Llama from a LlamaConfig with a byte-level BPE tokenizer trained on the bundled SQL task text.

    tiny        the embedded base (src/lmtune/assets/base/tiny), when it has been built
    random-5m   hidden 256, 4 layers, vocab 4096   (~5M params, the first prototype base's shape, docs/base-model.md)
    random-30m  hidden 512, 8 layers, GQA 8/4 heads, vocab 4096   (~27M params)
    random-100m hidden 1024, 8 layers, GQA 16/8 heads, vocab 4096 (~97M params)
    DIR         any local model directory saved with save_pretrained

Random models are saved once under the work directory (keyed by name and seed) and reused, so
every recipe loads the very same weights from disk, as a user would load a base model.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SQL_DIR = REPO / "src" / "lmtune" / "assets" / "tasks" / "sql"

# name -> LlamaConfig kwargs (vocab_size comes from the tokenizer)
SHAPES = {
    "random-5m": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4),
    "random-30m": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=4),
    "random-100m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                        num_attention_heads=16, num_key_value_heads=8),
}
VOCAB = 4096
SPECIALS = ["<|endoftext|>", "<|pad|>"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _corpus() -> list[str]:
    """Text the random model's tokenizer is trained on: the bundled SQL train split, in the
    alpaca layout every recipe renders it in (so its headers become single tokens, as in a real
    model's vocabulary)."""
    rows = read_jsonl(SQL_DIR / "train.jsonl")
    return [f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r.get('input', '')}\n\n"
            f"### Response:\n{r['output']}" for r in rows]


def build_tokenizer():
    """Byte-level BPE (GPT-2 style pre-tokenization), eos <|endoftext|>, pad <|pad|> (distinct)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|pad|>")


def build_random(name: str, out: Path, seed: int = 0) -> Path:
    """Save a random-init Llama `name` (see SHAPES) with its tokenizer under `out`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = build_tokenizer()
    # The SQL corpus only supports ~1.3k merges; the embedding is sized to VOCAB anyway so the
    # output layer costs what a small real vocabulary costs (extra rows are never used).
    cfg = LlamaConfig(vocab_size=max(VOCAB, len(tok)), max_position_embeddings=1024, tie_word_embeddings=False,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SHAPES[name])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


def resolve_model(name: str, work: Path, seed: int = 0) -> Path:
    """Model directory for `name`; builds random models on first use."""
    if name == "tiny":
        path = REPO / "src" / "lmtune" / "assets" / "base" / "tiny"
        if not (path / "config.json").is_file():
            raise SystemExit(f"the embedded base is not built ({path}); use --model random-5m "
                             f"or build it with scripts/build_base.py")
        return path
    if name in SHAPES:
        path = work / "models" / f"{name}-seed{seed}"
        if not (path / "model.safetensors").is_file():
            build_random(name, path, seed)
        return path
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {name}: not tiny, {', '.join(SHAPES)}, or a model directory")
    return path


def count_params(model_dir: Path) -> int:
    """Parameters from the safetensors headers (no torch import needed)."""
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                size = 1
                for d in meta["shape"]:
                    size *= d
                total += size
    return total
