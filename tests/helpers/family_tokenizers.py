"""Tiny tokenizers of the model families users fine-tune, trained locally with `tokenizers` in
milliseconds (no Hub), each with its family's special tokens, bos/eos/pad and chat template.

Two kinds, as the families ship them:
  byte-level BPE      llama3, smollm3 (Llama 3's split regex), qwen2.5, qwen3 (Qwen2's), phi4 (o200k's)
  SentencePiece-style llama2, mistral, gemma, phi3: a BPE with byte fallback (<0x0A> ...) over "▁"
                      words; llama2/mistral/phi3 prepend "▁" to text (add_dummy_prefix), gemma does not

The chat templates are short, faithful versions of the families' public templates (the logic
that shapes a prompt; tool calls, dates and reasoning switches left out):
  llama3   meta-llama/Meta-Llama-3-8B-Instruct (bos on the first message, content trimmed)
  qwen2.5  Qwen/Qwen2.5-7B-Instruct (ChatML, the default "You are Qwen..." system message)
  qwen3    Qwen/Qwen3-8B (ChatML, no default system message)
  smollm3  HuggingFaceTB/SmolLM3-3B (ChatML after a metadata system block, its default /think mode;
           no date, no default custom instructions)
  mistral  mistralai/Mistral-7B-Instruct-v0.1 ([INST] ... [/INST], no system role)
  llama2   meta-llama/Llama-2-7b-chat-hf (<<SYS>> inside the first [INST])
  gemma    google/gemma-3-1b-it (<start_of_turn>user/model, the system text before the first user turn)
  phi3     microsoft/Phi-3-mini-4k-instruct (<|user|> ... <|end|>, eos at the end of a finished chat)
  phi4     microsoft/Phi-4-mini-instruct (<|user|> ... <|end|>, byte-level vocabulary)
"""

from __future__ import annotations

import functools

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tiny_tokenizers import BYTE_TOKENS, CORPUS

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
O200K_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
          "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
QWEN25 = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
          "{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
          "<|im_end|>\n' }}{%- endif %}"
          "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
          "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
QWEN3 = ("{%- for message in messages %}{%- set content = message.content %}"
         "{%- if message.role == 'assistant' and '</think>' in content %}"
         "{%- set content = content.split('</think>')[-1].lstrip('\n') %}{%- endif %}"
         "{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}{%- endfor %}"
         "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
SMOLLM3 = ("{%- set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' %}"
           "{{- '<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nReasoning Mode: /think\n\n"
           "## Custom Instructions\n\n' + system + '\n\n<|im_end|>\n' }}"
           "{%- for message in messages %}{%- if message['role'] != 'system' %}"
           "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}"
           "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
          "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
GEMMA = ("{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
         "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
         "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
         "{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
         "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}"
         "{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
         "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
         "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")
PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
PHI4 = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}")

# family -> (kind, specials in id order, bos, eos, pad, unk, adds bos, split regex or space prefix, template)
FAMILIES = {
    "llama3": ("bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|eot_id|>", "<|finetune_right_pad_id|>"], "<|begin_of_text|>", "<|eot_id|>",
               "<|finetune_right_pad_id|>", None, True, LLAMA3_SPLIT, LLAMA3),
    "smollm3": ("bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>",
                        "<|finetune_right_pad_id|>"], None, "<|im_end|>", "<|finetune_right_pad_id|>", None, False,
                LLAMA3_SPLIT, SMOLLM3),
    "qwen2.5": ("bpe", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", None,
                False, QWEN2_SPLIT, QWEN25),
    "qwen3": ("bpe", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", None,
              False, QWEN2_SPLIT, QWEN3),
    "phi4": ("bpe", ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], None, "<|end|>",
             "<|endoftext|>", None, False, O200K_SPLIT, PHI4),
    "llama2": ("spm", ["<unk>", "<s>", "</s>"], "<s>", "</s>", None, "<unk>", True, True, LLAMA2),
    "mistral": ("spm", ["<unk>", "<s>", "</s>"], "<s>", "</s>", None, "<unk>", True, True, MISTRAL),
    "phi3": ("spm", ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
             "<s>", "<|endoftext|>", "<|endoftext|>", "<unk>", True, True, PHI3),
    "gemma": ("spm", ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<pad>",
              "<unk>", True, False, GEMMA),
}
# what each family's stop is at the end of an assistant turn (llama.cpp's eot)
TURN_END = {"llama3": "<|eot_id|>", "smollm3": "<|im_end|>", "qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>",
            "phi4": "<|end|>", "phi3": "<|end|>", "gemma": "<end_of_turn>"}


@functools.lru_cache(maxsize=None)
def _backend(family: str) -> Tokenizer:
    kind, specials, bos, *_, adds_bos, split, _ = FAMILIES[family]
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        alphabet, vocab = pre_tokenizers.ByteLevel.alphabet(), 400
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        # SentencePiece's own normalisation: spaces as "▁", and "▁" before the text when it adds a dummy prefix
        steps = [normalizers.Prepend("▁")] if split else []
        tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         *([decoders.Strip(" ", 1, 0)] if split else [])])
        specials = [*specials, *BYTE_TOKENS]
        alphabet, vocab = [], 700
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if kind == "spm":
        tok.pre_tokenizer = None  # trained word by word; SentencePiece applies no pre-tokenizer at run time
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The family's tiny tokenizer with its chat template (a fresh object each call)."""
    kind, specials, bos, eos, pad, unk, *_, template = FAMILIES[family]
    extra = [s for s in specials if s not in (bos, eos, pad, unk)]
    tok = PreTrainedTokenizerFast(tokenizer_object=_backend(family), bos_token=bos, eos_token=eos, pad_token=pad,
                                  unk_token=unk, additional_special_tokens=extra)
    tok.chat_template = template
    return tok


def save_family_model(path, family: str, seed: int = 0):
    """A tiny random Llama (hidden 32, 2 layers) carrying `family`'s tokenizer, saved like a Hub model."""
    from tiny_models import model_config, save_random_model

    tok = family_tokenizer(family)
    cfg = model_config("llama", len(tok))
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return save_random_model(path, cfg, tok, seed)


def mark_phi3_rstrip(model_dir):
    """Give a saved phi3 family tokenizer Phi-3's own added-token flags (microsoft/Phi-3-mini-4k-instruct):
    rstrip on every added token but <unk>, <s>, <|endoftext|> and the <0xNN> bytes, so transformers
    drops the whitespace after <|user|>, <|end|>, ... as llama.cpp does for a model named phi3."""
    import json
    import re

    keep = {"<unk>", "<s>", "<|endoftext|>"}

    def strips(content):
        return content not in keep and not re.fullmatch(r"<0x[0-9A-F]{2}>", content)

    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for tok in data["added_tokens"]:
        tok["rstrip"] = strips(tok["content"])
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    path = model_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for tok in (cfg.get("added_tokens_decoder") or {}).values():
        tok["rstrip"] = strips(tok["content"])
    path.write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return model_dir
