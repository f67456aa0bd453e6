"""The tokenizer inside a GGUF file, written the way llama.cpp's converter (convert_hf_to_gguf.py)
writes it, from the model folder's tokenizer.json:

- byte-level BPE (Llama 3, Qwen2/2.5/3, SmolLM3, GPT-NeoX, OLMo2, the embedded base):
  tokenizer.ggml.model "gpt2", the tokens, their merges and tokenizer.ggml.pre, the name llama.cpp
  picks its pre-tokenizer regex by (recognise_pre_tokenizer);
- SentencePiece-style vocabularies (Llama 2, Mistral, Gemma: a BPE with byte fallback on "▁"
  words, or a Unigram): tokenizer.ggml.model "llama" with a score per token (llama.cpp's SPM
  tokenizer merges the highest-scoring pair first, so a BPE's merge rank r becomes score -r),
  token types NORMAL, CONTROL, USER_DEFINED, UNKNOWN and BYTE (<0xNN>), and add_space_prefix.

Special ids (bos, eos, unk, pad) come from gguf.SpecialVocab, as in the converter. add_bos and
add_eos say what the Hugging Face tokenizer itself adds to plain text, which is what lmtune's
generate and serve do for lmtune's own templates; a chat template that writes bos_token itself is
tokenized by llama.cpp's chat code with that leading bos removed when add_bos is set, so neither
path ends up with two. eot is the first stop token after eos (<|im_end|>, <|eot_id|>,
<end_of_turn>, <|end|>): llama.cpp ends generation there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from lmtune.data.tokenize import special_prefix
from lmtune.errors import UserError

# llama.cpp's own probe text (convert_hf_to_gguf.py, get_vocab_base_pre): the sha256 of str() of
# its token ids names a pre-tokenizer. Only the hashes of families lmtune presets cover are kept.
CHKTXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
          "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
          "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
          "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
KNOWN_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",    # Meta-Llama-3-8B
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",        # Qwen1.5 .. Qwen3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",        # openai-community/gpt2
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",         # GPT-NeoX / OLMo 1.7
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",         # cl100k (OLMo2)
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",       # SmolLM 1/2
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",       # o200k (Phi-4-mini's base)
}
# The split regexes of the families' tokenizer.json (a small tokenizer trained on a family's
# pre-tokenizer hashes differently, but splits text the same way).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_O200K_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _O200K_SPLIT: "gpt-4o"}
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class Vocab:
    model: str                     # tokenizer.ggml.model: "gpt2" or "llama"
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None
    pre: str = "default"
    notes: list[str] = field(default_factory=list)


def read_tokenizer_json(model_dir: Path) -> dict:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; export --format gguf reads the tokenizer from tokenizer.json",
                        ["save the tokenizer with a fast tokenizer (tokenizer.save_pretrained) into the model folder"])
    return json.loads(path.read_text(encoding="utf-8"))


def is_byte_level(data: dict) -> bool:
    """A byte-level BPE (GPT-2's byte-to-unicode alphabet), found in the pre-tokenizer or decoder."""
    def has(node) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has(n) for n in node.get("pretokenizers", node.get("decoders", [])) or [])
    return has(data.get("pre_tokenizer")) or has(data.get("decoder"))


def _splits(node) -> list[str]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Split":
        pattern = node.get("pattern") or {}
        return [pattern.get("Regex") or pattern.get("String") or ""]
    return [s for n in node.get("pretokenizers") or [] for s in _splits(n)]


def recognise_pre_tokenizer(tokenizer, data: dict) -> str:
    """tokenizer.ggml.pre: llama.cpp's hash of the probe text's ids when the vocabulary is one it
    knows, else the name of a family split regex the pre-tokenizer uses, else GPT-2's plain
    byte-level split, else 'default' (llama.cpp then splits some text differently: docs/deploy.md)."""
    ids = tokenizer(CHKTXT, add_special_tokens=True)["input_ids"]
    known = KNOWN_HASHES.get(sha256(str(ids).encode()).hexdigest())
    if known:
        return known
    for split in _splits(data.get("pre_tokenizer")):
        if split in KNOWN_SPLITS:
            return KNOWN_SPLITS[split]
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


def guess_pre_tokenizer(model_dir: Path) -> str:
    """recognise_pre_tokenizer for a model folder (kept for callers that hold only the path)."""
    from transformers import AutoTokenizer

    return recognise_pre_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)), read_tokenizer_json(model_dir))


def _base_tokens(tokenizer, n_vocab: int) -> tuple[dict[int, str], dict]:
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    too_big = [i for i in by_id if i >= n_vocab]
    if too_big:
        raise UserError(f"the tokenizer has {len(too_big)} token ids past the model's vocab_size {n_vocab} "
                        f"(e.g. {by_id[min(too_big)]!r} = {min(too_big)})",
                        ["resize the model's embeddings to the tokenizer (model.resize_token_embeddings) "
                         "and save it again"])
    return by_id, tokenizer.added_tokens_decoder


def bpe_vocab(tokenizer, data: dict, n_vocab: int, pre: str | None) -> Vocab:
    import gguf

    by_id, added = _base_tokens(tokenizer, n_vocab)
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return Vocab("gpt2", tokens, types, pre=pre or recognise_pre_tokenizer(tokenizer, data))


def _merge_scores(model: dict) -> dict[str, float]:
    """score per token text: a Unigram's own log-probabilities, a BPE's -rank of the merge that
    first makes the token (llama.cpp merges the highest score first, Hugging Face the lowest rank)."""
    if model.get("type") == "Unigram":
        return {piece: float(score) for piece, score in model.get("vocab", [])}
    scores: dict[str, float] = {}
    for rank, merge in enumerate(model.get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    return scores


def _adds_space_prefix(data: dict) -> bool:
    """SentencePiece's add_dummy_prefix, as the tokenizer.json says it: a Prepend("▁") normalizer
    (Llama 2, Mistral) or a Metaspace pre-tokenizer that prepends; Gemma has neither."""
    text = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")])
    if '"type": "Prepend"' in text:
        return True
    meta = re.search(r'"type": "Metaspace"[^}]*', text)
    return bool(meta) and '"prepend_scheme": "never"' not in meta[0] and '"add_prefix_space": false' not in meta[0]


def sentencepiece_vocab(tokenizer, data: dict, n_vocab: int) -> Vocab:
    import gguf

    by_id, added = _base_tokens(tokenizer, n_vocab)
    scores_by_text = _merge_scores(data.get("model") or {})
    unk = data.get("model", {}).get("unk_token") or tokenizer.unk_token
    tokens, types, scores = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            scores.append(-10000.0)
            continue
        if text == unk:
            kind, score = gguf.TokenType.UNKNOWN, 0.0
        elif BYTE_TOKEN.fullmatch(text):
            kind, score = gguf.TokenType.BYTE, 0.0
        elif i in added:
            # user-defined tokens are matched on plain text by llama.cpp: their "▁" is a space there
            kind = gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
            text = text if added[i].special else text.replace("▁", " ")
            score = -1000.0
        else:
            kind, score = gguf.TokenType.NORMAL, scores_by_text.get(text, 0.0)
        tokens.append(text)
        types.append(kind)
        scores.append(score)
    return Vocab("llama", tokens, types, scores, add_space_prefix=_adds_space_prefix(data))


def vocab_kind(data: dict) -> str:
    """tokenizer.ggml.model for a tokenizer.json: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)."""
    model = data.get("model") or {}
    if is_byte_level(data):
        return "gpt2"
    if model.get("type") == "Unigram" or model.get("byte_fallback"):
        return "llama"
    raise UserError(f"export --format gguf: a {model.get('type')} tokenizer that is neither byte-level BPE nor "
                    "SentencePiece-style (byte fallback or Unigram) has no llama.cpp tokenizer lmtune can write",
                    ["convert the merged folder with llama.cpp's convert_hf_to_gguf.py"])


def build_vocab(tokenizer, data: dict, n_vocab: int, pre: str | None) -> Vocab:
    if vocab_kind(data) == "gpt2":
        return bpe_vocab(tokenizer, data, n_vocab, pre)
    return sentencepiece_vocab(tokenizer, data, n_vocab)


def check_tokenizer(directory: Path) -> None:
    """What export can tell from tokenizer.json alone, before any merge or folder: that it is
    there and of a kind llama.cpp has."""
    vocab_kind(read_tokenizer_json(directory))


def special_suffix(tokenizer) -> list[int]:
    """Ids the tokenizer puts after any text (an eos some tokenizers append); [] for most."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    prefix = special_prefix(tokenizer)
    return list(full[len(prefix) + len(plain):])


def starts_with_bos(chat_template: str, tokenizer) -> bool:
    """Whether the chat template's prompt starts with the bos text. When it does, llama.cpp's chat
    code removes that text and adds the bos token (add_bos), so the prompt has one bos as in lmtune;
    when it does not (Phi-3's template, the tokenizer's own bos left out), add_bos must be off for
    llama.cpp's prompt to equal lmtune's."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def refuse(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = refuse
    try:
        text = env.from_string(chat_template).render(
            messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True,
            bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
    except Exception:  # a template that needs more than a plain turn: the tokenizer's own rule
        return True
    return bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token)


# llama.cpp (llama-vocab.cpp) gives every special token the rstrip attribute when general.name
# contains "phi3" or "phi-3", as Phi-3's tokenizer.json marks its added tokens, except these:
PHI3_NOT_RSTRIP = ("<unk>", "<s>", "<|endoftext|>")


def strips_like_phi3(tokenizer) -> bool:
    """Whether the tokenizer strips the whitespace after its special tokens the way llama.cpp does
    for a model named phi3: every added token but <unk>, <s>, <|endoftext|> (and <0xNN> bytes,
    BYTE tokens in llama.cpp) has rstrip, those three do not, and all of them and </s> are there
    (llama.cpp's loader looks them up). Phi-3's own tokenizer does; "<|user|>\nHi" then loses its
    newline in transformers and llama.cpp alike."""
    vocab = tokenizer.get_vocab()
    if not all(t in vocab for t in ("</s>", *PHI3_NOT_RSTRIP)):
        return False
    added = [t for t in tokenizer.added_tokens_decoder.values() if not BYTE_TOKEN.fullmatch(t.content)]
    marked = [t for t in added if t.content not in PHI3_NOT_RSTRIP]
    return bool(marked) and all(t.rstrip for t in marked) and not any(
        t.rstrip for t in added if t.content in PHI3_NOT_RSTRIP)


def add_tokenizer(writer, model_dir: Path, cfg: dict, chat_template: str, stops: list[str],
                  pre_tokenizer: str | None) -> dict:
    """Write the tokenizer keys; returns a summary (vocabulary kind, pre-tokenizer, sizes, flags)."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    data = read_tokenizer_json(model_dir)
    vocab = build_vocab(tok, data, cfg["vocab_size"], pre_tokenizer)
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    special = gguf.SpecialVocab(str(model_dir), load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    special.chat_template = chat_template  # the run's template, not the tokenizer's default
    add_bos = bool(special_prefix(tok)) and starts_with_bos(chat_template, tok)
    add_eos = bool(special_suffix(tok))
    special.add_special_token.update(bos=add_bos, eos=add_eos)
    if add_bos and tok.bos_token_id is not None:
        special.special_token_ids["bos"] = tok.bos_token_id
    special.add_to_gguf(writer)
    # Stop tokens past eos (e.g. ChatML's <|im_end|>): llama.cpp reads eot as end of generation.
    vocab_ids = tok.get_vocab()
    stop_ids = [vocab_ids[s] for s in stops if s in vocab_ids and s != tok.eos_token]
    if stop_ids:
        writer.add_eot_token_id(stop_ids[0])
    writer.add_array("lmtune.stop", stops)  # every stop as text, token or not (alpaca's is text)
    return {"pre_tokenizer": vocab.pre if vocab.model == "gpt2" else f"sentencepiece ({vocab.pre})",
            "tokenizer_model": vocab.model, "merges": len(special.merges), "vocab": len(vocab.tokens),
            "add_bos": add_bos, "add_eos": add_eos}
