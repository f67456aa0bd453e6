"""The GGUF tokenizer in llama.cpp itself: for each family tokenizer (tests/helpers/family_tokenizers.py)
on a tiny Llama, export an f32 GGUF with lmtune, open it in llama.cpp (llama-cpp-python, vocab only)
and compare with transformers:

- texts: llama.cpp's tokenize(text, add_bos=False, special=False) against the HF tokenizer's ids
  (add_special_tokens=False), on mixed English, digits, punctuation, whitespace runs, newlines,
  non-ASCII and code;
- detokenization: llama.cpp's llama_detokenize (the C API llama.cpp's own tools use) of the HF ids
  against the HF decode; and llama-cpp-python's Llama.detokenize, which adds token pieces without
  removing SentencePiece's leading space (shown apart, it is the wrapper's behaviour);
- the chat prompt: the GGUF's tokenizer.chat_template rendered with jinja2 for a two-turn
  conversation, a leading bos text removed when add_bos (common/chat.cpp), tokenized by llama.cpp
  with special=True and add_bos per the GGUF, against lmtune generate's prompt ids.

    PYTHONPATH=src:tests/helpers:/tmp/llamacpp:/tmp/llamadeps python scripts/check_gguf_tokenizers.py \
        [--families llama3,gemma] [--jsonl benchmarks/results/gguf_tokenizers.jsonl]

Prints one JSON line per family (llama.cpp built as in scripts/check_gguf_llamacpp.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lmtune.export.gguf_vocab import CHKTXT

TEXTS = [
    "Hello, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "12 times 12 = 144; 3.14159 and 1,000,000 and 2026-12-07",
    "What?! Yes... no -- maybe (or [not]) {ok} <tag> 'quoted' \"double\"",
    "two  spaces,   three,    four and a tab\there\t\tand two",
    "line one\nline two\n\nafter a blank line\r\nwindows line\n",
    "   leading spaces and trailing spaces   ",
    "naïve café 東京 😀",
    "Ünïcödé: Grüße aus Köln, ça va? Привет мир. 你好，世界！ ☃ ✅",
    "def f(x):\n    return x ** 2  # square\n",
    "SELECT COUNT(*) FROM orders WHERE city = 'Oslo';",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "I've been told he's there, 'RE you sure? We'Ve a'lL",
    "\n\n\n",
    " ",
    "3333333 33333333 1234567890 x²",
    "cafe\u0301 (a combining accent) and \u00a0no-break\u2009thin spaces",
    CHKTXT,   # llama.cpp's own pre-tokenizer probe: emoji sequences, Khmer, CJK, quote runs
]
PHI3_RSTRIP = "phi3+rstrip"   # the phi3 family tokenizer with Phi-3's rstrip flags on its added tokens
CONVERSATION = [{"role": "user", "content": "Hi there, naïve café?"},
                {"role": "assistant", "content": "Hello.  Yes:\n12 rows."},
                {"role": "user", "content": "Count the rows of orders.\nThen stop."}]


def _first_difference(a: list, b: list) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _detokenize_c(llm, ids: list[int]) -> str:
    """llama.cpp's llama_detokenize (remove_special off, special tokens not rendered)."""
    import ctypes

    import llama_cpp

    arr = (llama_cpp.llama_token * len(ids))(*ids)
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, len(buf), False, False)
    if n < 0:
        raise RuntimeError(f"llama_detokenize needs {-n} bytes")
    return buf.raw[:n].decode("utf-8", errors="replace")


def _gguf_fields(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for key in ("general.name", "tokenizer.chat_template", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.model", "tokenizer.ggml.pre"):
        f = reader.fields.get(key)
        out[key] = None if f is None else f.contents()
    return out


def _chat_text(fields: dict, llm, conversation) -> tuple[str, bool]:
    """common/chat.cpp: render the GGUF's template with the GGUF's bos/eos text, drop a leading
    bos text when add_bos (the tokenizer adds the bos)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    add_bos = bool(fields["tokenizer.ggml.add_bos_token"])
    bos_id = fields["tokenizer.ggml.bos_token_id"]
    bos = llm._model.token_get_text(bos_id) if bos_id is not None else ""
    eos = llm._model.token_get_text(llm.token_eos())
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(fields["tokenizer.chat_template"]).render(
        messages=conversation, add_generation_prompt=True, bos_token=bos, eos_token=eos)
    if add_bos and bos and text.startswith(bos):
        text = text[len(bos):]
    return text, add_bos


def check_family(family: str, tmp: Path) -> dict:
    from llama_cpp import Llama

    from family_tokenizers import mark_phi3_rstrip, save_family_model
    from lmtune.export import export
    from lmtune.generate import Generator

    if family == PHI3_RSTRIP:  # Phi-3's own rstrip flags, in a run whose name does not say phi3
        model_dir = mark_phi3_rstrip(save_family_model(tmp / "sql-bot", "phi3"))
    else:
        model_dir = save_family_model(tmp / family, family)
    gen = Generator.load(str(model_dir))
    hf = gen.tokenizer
    res = export(str(model_dir), str(tmp / f"{family}-gguf"), quant="f32")
    fields = _gguf_fields(res.gguf)
    llm = Llama(model_path=str(res.gguf), vocab_only=True, verbose=False)

    text_diffs, detok_bad, wrapper_bad = {}, [], []
    for i, text in enumerate(TEXTS):
        want = hf(text, add_special_tokens=False)["input_ids"]
        got = llm.tokenize(text.encode(), add_bos=False, special=False)
        if got != want:
            pos = _first_difference(got, want)
            text_diffs[i] = {"text": text, "position": pos, "llama.cpp": llm._model.token_get_text(got[pos])
                             if pos < len(got) else None,
                             "hf": hf.convert_ids_to_tokens(want[pos]) if pos < len(want) else None}
        decoded = hf.decode(want)
        if _detokenize_c(llm, want) != decoded:
            detok_bad.append({"text": text, "llama.cpp": _detokenize_c(llm, want), "hf": decoded})
        if llm.detokenize(want).decode("utf-8", errors="replace") != decoded:
            wrapper_bad.append(i)

    chat_text, add_bos = _chat_text(fields, llm, CONVERSATION)
    chat_got = llm.tokenize(chat_text.encode(), add_bos=add_bos, special=True)
    chat_want = gen.encode(CONVERSATION)
    pos = _first_difference(chat_got, chat_want)
    bos_id = hf.bos_token_id
    del llm
    return {"family": family, "general.name": fields["general.name"], "tokenizer_model": fields["tokenizer.ggml.model"],
            "pre": fields["tokenizer.ggml.pre"], "add_bos": add_bos,
            "texts_identical": f"{len(TEXTS) - len(text_diffs)}/{len(TEXTS)}",
            "detokenize_identical": f"{len(TEXTS) - len(detok_bad)}/{len(TEXTS)}",
            "llama_cpp_python_detokenize_identical": f"{len(TEXTS) - len(wrapper_bad)}/{len(TEXTS)}",
            "chat_prompt_identical": "yes" if pos is None else "no",
            "chat_prompt_tokens": len(chat_want),
            "bos_count_llama_cpp": chat_got.count(bos_id) if bos_id is not None else 0,
            "bos_count_lmtune": chat_want.count(bos_id) if bos_id is not None else 0,
            "chat_first_difference": pos,
            "text_differences": list(text_diffs.values()), "detokenize_differences": detok_bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=None, help="comma-separated (default: all of family_tokenizers.FAMILIES, and phi3+rstrip)")
    ap.add_argument("--jsonl", default=None, help="also append the rows to this file")
    args = ap.parse_args()

    import lmtune  # noqa: F401  (passive OpenMP waiting before torch loads)
    from family_tokenizers import FAMILIES

    families = args.families.split(",") if args.families else [*FAMILIES, PHI3_RSTRIP]
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            try:
                row = check_family(family, Path(tmp))
            except Exception as exc:  # report a family llama.cpp refuses, then go on with the next
                row = {"family": family, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
