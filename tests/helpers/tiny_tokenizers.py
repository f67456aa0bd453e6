"""Tiny tokenizers in the styles of real model families, trained locally with `tokenizers` in
milliseconds (no Hub). Each returns a transformers tokenizer (TokenizersBackend).

  llama_style    SentencePiece-like BPE (Metaspace, byte fallback), adds <s>; eos </s>, unk <unk>,
                 no pad; optionally a Llama-2 "[INST]" chat template (no generation markers)
  gpt2_style     byte-level BPE, no bos added, <|endoftext|> is bos/eos/unk, no pad, no template
  qwen_style     byte-level BPE with <|im_start|>/<|im_end|>, ChatML chat template without markers;
                 eos <|im_end|> (instruct) or <|endoftext|> (base); pad <|endoftext|>
  marked_style   byte-level BPE with a chat template carrying {% generation %} markers (the kind
                 the embedded base ships); eos <|end|>, pad <|pad|>
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "Translate the sentence to French. The cat sleeps on the sofa. Le chat dort sur le canapé.",
    "Give the capital of the country. Portugal Lisbon Spain Madrid Berlin Paris",
    "Write a SQL query that counts the rows of the table. SELECT COUNT(*) FROM orders;",
    "SELECT name FROM customers WHERE city = 'Berlin'; table: customers(name, city)",
    "What does LoRA train? Two small low-rank matrices per adapted layer.",
    "Hello, how are you? I am fine, thank you. What is 12 times 12? 144. And divided by 3? 48.",
    "The quick brown fox jumps over the lazy dog. 0123456789 {}[]()<>|_:;,.!?'\"-+=*/\\#@$%&^~`",
    "### Instruction: ### Input: ### Response: system user assistant",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 3

# SentencePiece byte-fallback pieces: "\n" and other unseen characters become <0x0A> etc., as in Llama.
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

LLAMA2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MARKED_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|assistant|>\n"
    "{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _train(model: models.Model, pre, decoder, special: list[str], vocab_size: int = 420) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre
    tok.decoder = decoder
    alphabet = pre_tokenizers.ByteLevel.alphabet() if isinstance(pre, pre_tokenizers.ByteLevel) else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@functools.lru_cache(maxsize=None)
def _llama_backend() -> Tokenizer:
    tok = _train(models.BPE(unk_token="<unk>", byte_fallback=True),
                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                 decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)]), ["<unk>", "<s>", "</s>", *BYTE_TOKENS], vocab_size=700)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def llama_style(chat_template: bool = False) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=_llama_backend(), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    if chat_template:
        tok.chat_template = LLAMA2_TEMPLATE
    return tok


@functools.lru_cache(maxsize=None)
def _byte_level_backend(special: tuple[str, ...]) -> Tokenizer:
    return _train(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(),
                  list(special))


def gpt2_style() -> PreTrainedTokenizerFast:
    backend = _byte_level_backend(("<|endoftext|>",))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def qwen_style(eos: str = "<|im_end|>") -> PreTrainedTokenizerFast:
    backend = _byte_level_backend(("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def marked_style() -> PreTrainedTokenizerFast:
    specials = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
    backend = _byte_level_backend(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|end|>",
                                  pad_token="<|pad|>", additional_special_tokens=list(specials[2:]))
    tok.chat_template = MARKED_TEMPLATE
    return tok
