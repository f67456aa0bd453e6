"""Check an exported GGUF in llama.cpp itself: greedy tokens from llama-cpp-python vs transformers
on the same prompt token ids, per quant.

    pip install --no-deps --target /tmp/llamacpp llama-cpp-python==0.3.36   # builds llama.cpp (~7 min, 2 cores)
    pip install --target /tmp/llamadeps diskcache==5.6.3                      # its one runtime import
    PYTHONPATH=src:/tmp/llamacpp:/tmp/llamadeps python scripts/check_gguf_llamacpp.py tiny --quants f32,f16,q8_0,q4_0

Prompts are rendered by the run's template and tokenized by transformers; llama.cpp gets the ids,
not the text, so a pre-tokenizer that llama.cpp does not know (the embedded base's) cannot blur the
comparison of the weights. Both sides decode greedily for --max-tokens tokens without stopping.
Prints one JSON line per quant: sequences identical, and tokens equal before the first difference.
Results (docs/deploy.md): f32/f16 identical on every prompt; benchmarks/results/gguf_llamacpp.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile

PROMPTS = ["What is a list in Python?", "Write SQL to count customers.", "Explain the for statement.",
           "How do I open a file?", "Customers in Oslo?", "What does dict.get return?",
           "Give a JSON object for a person.", "What is a tuple?", "How do I sort a list?",
           "What is an exception?", "Name three cities.", "What is 2 + 2?"]


def greedy_transformers(model, prompt_ids: list[int], n: int) -> list[int]:
    import torch

    ids = torch.tensor([prompt_ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def greedy_llamacpp(llm, prompt_ids: list[int], n: int) -> list[int]:
    llm.reset()
    out = []
    for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        out.append(tok)
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="tiny")
    ap.add_argument("--quants", default="f32,f16,q8_0,q4_0")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()

    import lmtune  # noqa: F401  (passive OpenMP waiting before torch loads)
    from llama_cpp import Llama

    from lmtune.export import export
    from lmtune.generate import Generator

    gen = Generator.load(args.model)
    prompts = [gen.encode(p) for p in PROMPTS]
    reference = [greedy_transformers(gen.model, p, args.max_tokens) for p in prompts]
    for quant in args.quants.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            res = export(args.model, f"{tmp}/out", quant=quant)
            llm = Llama(model_path=str(res.gguf), n_ctx=512, n_threads=1, verbose=False)
            got = [greedy_llamacpp(llm, p, args.max_tokens) for p in prompts]
            del llm
        same = sum(g == r for g, r in zip(got, reference))
        prefix = sum(next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), len(r)) for g, r in zip(got, reference))
        print(json.dumps({"model": args.model, "quant": quant, "prompts": len(prompts), "max_tokens": args.max_tokens,
                          "identical_sequences": same, "tokens_before_first_difference":
                          round(prefix / (len(prompts) * args.max_tokens), 3)}), flush=True)


if __name__ == "__main__":
    main()
