"""Tiny causal LMs of several architectures, built from configs and saved to disk like a Hub model
(safetensors + tokenizer), so tests exercise the real loading path with no network."""

from __future__ import annotations

from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
          "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}"
          "{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = [
    "SELECT name FROM customers WHERE city = 'Berlin' ORDER BY name;",
    "How many orders were placed in 2021? What is the total amount?",
    "### Instruction:\nList the customers.\n\n### Input:\nTable customers\n\n### Response:\n",
    "The quick brown fox jumps over the lazy dog. {\"name\": \"Ada\", \"age\": 36}",
] * 20

ARCHS = ("llama", "qwen2", "mistral", "gpt2", "phi")


def build_tokenizer(chat_template: bool = True):
    """A byte-level BPE tokenizer (vocab ~300) with eos, a distinct pad and ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        fast.chat_template = CHATML
    return fast


def model_config(arch: str, vocab_size: int):
    """A ~100k-parameter config of `arch` (2 layers, hidden 32)."""
    import transformers as tf

    # 512 positions: data.max_length's default fits (train refuses a max_length beyond the model's
    # positions); RoPE models hold no weights per position, so this changes no tensor
    common = dict(vocab_size=vocab_size, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=512, tie_word_embeddings=False)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig,
           "phi": tf.PhiConfig}[arch]
    kv = {} if arch == "phi" else {"num_key_value_heads": 2}
    return cls(hidden_size=32, intermediate_size=64, **kv, **common)


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0, chat_template: bool = True) -> Path:
    """Build a random tiny `arch` model + tokenizer and save both under `path`."""
    tok = build_tokenizer(chat_template)
    cfg = model_config(arch, len(tok))
    cfg.eos_token_id = cfg.bos_token_id = tok.eos_token_id
    cfg.pad_token_id = tok.pad_token_id
    return save_random_model(path, cfg, tok, seed)


def save_random_model(path: Path, cfg, tok, seed: int = 0) -> Path:
    """A model of `cfg` with random weights drawn from `seed`, saved with `tok` under `path` like a Hub model."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def write_alpaca(path: Path, n: int = 40, seed: int = 0) -> Path:
    """A small alpaca JSONL: copy a city name into a fixed SQL shape (learnable in a few steps)."""
    import json
    import random

    rng = random.Random(seed)
    cities = ["Berlin", "Paris", "Rome", "Oslo", "Lima", "Quito", "Cairo", "Delhi"]
    rows = []
    for i in range(n):
        city = rng.choice(cities)
        rows.append({"instruction": f"Customers in {city}? ({i})", "input": "",
                     "output": f"SELECT name FROM customers WHERE city = '{city}';"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_run_inputs(root: Path):
    """A tiny Llama base and a 12-example alpaca file under `root`: what a unit test of train/recipe.py runs on."""
    from types import SimpleNamespace

    return SimpleNamespace(model=save_tiny_model(root / "base", "llama"), data=write_alpaca(root / "train.jsonl", 12))


def save_random_lora_adapter(base: Path, out: Path, seed: int, std: float) -> Path:
    """A rank-4 LoRA adapter on every linear of `base` with lora_B drawn N(0, std) (peft starts B at
    zero, a no-op; a random B makes merging move the logits), saved with the base's tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


class InputsSeen(Exception):
    """Raised by the model `meta_model` builds, at its forward: args[0] maps each tensor argument
    to the device it arrived on."""


def meta_model(config):
    """The model of `config` on the meta device (no memory, no values), stopping at its forward with
    InputsSeen. It stands in for a model on an accelerator: on a CPU-only machine a forgotten
    `.to(model.device)` leaves the inputs on the CPU, which a CPU model cannot tell apart."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)

    def stop(module, args, kwargs):
        seen = {f"arg{i}": a.device for i, a in enumerate(args) if torch.is_tensor(a)}
        raise InputsSeen(seen | {k: v.device for k, v in kwargs.items() if torch.is_tensor(v)})

    model.register_forward_pre_hook(stop, with_kwargs=True)
    return model


def save_tiny_run(root: Path, method: str = "lora", arch: str = "llama") -> Path:
    """What `lmtune train` leaves, built by hand in a second: root/run with config.yaml,
    template.json, train_summary.json and adapter/ (lora: a random adapter on root/base) or model/
    (full: the base's own weights). Returns the run directory."""
    import json
    import shutil

    from lmtune.config import load_config

    base = save_tiny_model(root / "base", arch)
    run = root / "run"
    run.mkdir(parents=True)
    if method == "lora":
        save_random_lora_adapter(base, run / "adapter", seed=3, std=0.2)
    else:
        shutil.copytree(base, run / "model")
    cfg = load_config(None, [f"model.name_or_path={base}", "data.task=sql", f"method={method}",
                             "train.learning_rate=2e-4", f"output.dir={run}"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "template.json").write_text(json.dumps({"name": "alpaca"}))
    (run / "train_summary.json").write_text(json.dumps({"global_step": 2, "epochs": 1.0}))
    return run
