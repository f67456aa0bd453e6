"""Tokenize text from a GGUF file's own tokenizer keys the way llama.cpp does (llama-vocab.cpp),
written independently of lmtune's writer, so a test can check that the vocabulary lmtune wrote
tokenizes a prompt to the ids the Hugging Face tokenizer gives.

- special tokens: CONTROL, USER_DEFINED and UNKNOWN token texts are cut out of the text first
  (llama.cpp's parse_special), longest first;
- "gpt2" (byte-level BPE): each remaining piece is split by the regex tokenizer.ggml.pre names, mapped
  to GPT-2's byte alphabet and merged by the merge list's rank;
- "llama" (SentencePiece): spaces become "▁", a "▁" goes before a piece that follows a special token
  or starts the text when add_space_prefix is set, then the adjacent pair whose concatenation is the
  highest-scoring token is merged first (ties: leftmost), and a piece left outside the vocabulary
  becomes its <0xNN> byte tokens.
"""

from __future__ import annotations

import heapq

import gguf
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

# llama.cpp's regexes for the pre-tokenizer names lmtune writes (llama-vocab.cpp), in the
# tokenizers library's syntax
SPLITS = {
    "llama-bpe": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "qwen2": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "gpt-4o": (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "gpt-2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}
_SPECIAL = (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED, gguf.TokenType.UNKNOWN)


class GGUFTokenizer:
    def __init__(self, path):
        reader = gguf.GGUFReader(str(path))
        self.fields = {k: v.contents() for k, v in reader.fields.items() if k.startswith("tokenizer.")}
        f = self.fields
        self.model = f["tokenizer.ggml.model"]
        self.tokens = f["tokenizer.ggml.tokens"]
        self.types = f["tokenizer.ggml.token_type"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.specials = sorted((t for t, k in zip(self.tokens, self.types) if k in _SPECIAL), key=len, reverse=True)
        self.add_bos = bool(f.get("tokenizer.ggml.add_bos_token", False))
        self.bos_id = f.get("tokenizer.ggml.bos_token_id")
        self.bos = self.tokens[self.bos_id] if self.bos_id is not None else None
        if self.model == "gpt2":
            merges = [tuple(m.split(" ", 1)) for m in f["tokenizer.ggml.merges"]]
            bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(self.tokens)}, merges))
            bpe.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(SPLITS[f["tokenizer.ggml.pre"]]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            self._bpe = bpe
        else:
            self.scores = f["tokenizer.ggml.scores"]
            self.space_prefix = bool(f.get("tokenizer.ggml.add_space_prefix", True))

    def _fragments(self, text: str):
        """(is_special, text) pieces, special tokens cut out longest first."""
        pieces = [(False, text)]
        for special in self.specials:
            out = []
            for is_special, piece in pieces:
                if is_special or special not in piece:
                    out.append((is_special, piece))
                    continue
                parts = piece.split(special)
                for i, part in enumerate(parts):
                    if i:
                        out.append((True, special))
                    if part:
                        out.append((False, part))
            pieces = out
        return pieces

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """llama_tokenize(text, add_special, parse_special=True)."""
        ids = [self.bos_id] if add_special and self.add_bos else []
        prev_special = True
        for is_special, piece in self._fragments(text):
            if is_special:
                ids.append(self.ids[piece])
            elif self.model == "gpt2":
                ids += self._bpe.encode(piece, add_special_tokens=False).ids
            else:
                ids += self._spm((" " if self.space_prefix and prev_special else "") + piece)
            prev_special = is_special
        return ids

    def _spm(self, text: str) -> list[int]:
        symbols = list(text.replace(" ", "▁"))
        queue = []

        def push(left: int, right: int):
            merged = symbols[left] + symbols[right]
            if merged in self.ids:
                heapq.heappush(queue, (-self.scores[self.ids[merged]], left, right, merged))

        for i in range(len(symbols) - 1):
            push(i, i + 1)
        nxt = list(range(1, len(symbols) + 1))
        prv = list(range(-1, len(symbols) - 1))
        while queue:
            _, left, right, merged = heapq.heappop(queue)
            if symbols[left] is None or symbols[right] is None or symbols[left] + symbols[right] != merged \
                    or nxt[left] != right:
                continue   # a stale pair: one side was merged since
            symbols[left], symbols[right] = merged, None
            nxt[left] = nxt[right]
            if nxt[left] < len(symbols):
                prv[nxt[left]] = left
                push(left, nxt[left])
            if prv[left] >= 0:
                push(prv[left], left)
        out = []
        for sym in symbols:
            if sym is None:
                continue
            if sym in self.ids:
                out.append(self.ids[sym])
            else:
                out += [self.ids[f"<0x{b:02X}>"] for b in sym.encode("utf-8")]
        return out
