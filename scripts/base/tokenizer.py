"""Byte-level BPE tokenizer whose pre-tokenization makes copying possible.

The first prototype base's GPT-2 pattern (` ?\\p{L}+`, docs/base-model.md) glued the leading
space (or quote) to a word, so
`Berlin` in prose (" Berlin") and in SQL ("'Berlin'") became different tokens and a small model
could not copy one into the other. Here every pre-token is ONE of: a run of letters, a single
digit, a run of punctuation, a newline, or a run of other whitespace. A word therefore
tokenizes identically wherever it stands (after a space, a quote, a bracket, line start), and a
year is always its four digit tokens. Cost: spaces are separate tokens (~1.4x more tokens on
prose than GPT-2 style), acceptable for exact copying.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, EOS, IM_START, IM_END]          # ids 0..3, in this order

# letters (with combining marks) | one digit | punctuation run | newline | other whitespace run
SPLIT_PATTERN = r"[\p{L}\p{M}]+|\p{N}|[^\s\p{L}\p{M}\p{N}]+|\r?\n|[^\S\r\n]+"

# ChatML. `{% generation %}` marks what the assistant produces (its text AND the closing
# <|im_end|>, so a tuned model learns to stop): transformers' return_assistant_tokens_mask and
# TRL's assistant_only_loss read these markers. The newline after <|im_end|> is outside, as the
# next turn's separator.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] + '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        # bytes -> printable symbols; no regex of its own (ours above), no prefix space
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train BPE on `texts` (deterministic for a fixed input order and tokenizers version)."""
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    return tok


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def wrap(tok: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """The transformers tokenizer that is saved next to the model."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=None, unk_token=None,
        additional_special_tokens=[IM_START, IM_END], chat_template=CHAT_TEMPLATE,
        model_max_length=max_length, padding_side="right", clean_up_tokenization_spaces=False)
