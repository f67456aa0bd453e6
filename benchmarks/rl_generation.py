"""Tokens/s of GRPO's sampling on CPU: TRL 1.16's own generation (what train.objective grpo runs)
against lmtune's batched Generator (src/lmtune/generate.py), same model, prompts and sampling.

The embedded `tiny` base, the bundled SQL task's training prompts rendered by the template a grpo
run uses, rl.num_generations answers of at most rl.max_new_tokens per prompt, temperature 1.
Paths, each one model.generate per batch with the KV cache unless said:

  trl          GRPOTrainer's call: the GenerationConfig it builds from the GRPOConfig lmtune's
               train/grpo.py makes (top_k 0, top_p 1, the run's stop ids), all prompts x answers of
               one generation batch (train.batch_size x train.grad_accum) in one call
  trl-static   the same with GRPOConfig.cache_implementation="static"
  trl-nocache  the same with use_cache=False: what the KV cache buys (--nocache; slow)
  generator    lmtune's Generator.generate (sampling, batches of --generator-batch sequences; its
               top_k is transformers' default 50, TRL's is 0: answers differ, hence `decoded`)

Tokens are the sampled answers' tokens up to and with the first stop id (what TRL keeps), counted
the same way for every path. After one short uncounted warm-up generate, the paths run interleaved,
--repeats rounds, same seeds per round; the median tokens/s and CPU seconds (process time: the
machine may be shared) are reported, and each path's ratio to `trl`:

    python benchmarks/rl_generation.py [--prompts 8] [--generations 4,8] [--max-new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch


def _setup(prompts: int, generations: int, max_new: int):
    from transformers import AutoModelForCausalLM

    from lmtune.config import load_config
    from lmtune.data import resolve_files
    from lmtune.generate import stop_ids_of
    from lmtune.models import open_tokenizer, resolve_model_path
    from lmtune.rl.prompts import load_prompts
    from lmtune.train.recipe import run_template

    cfg = load_config(None, ["model.name_or_path=tiny", "data.task=sql", "train.objective=grpo",
                             f"rl.num_generations={generations}", f"rl.max_new_tokens={max_new}"])
    tokenizer = open_tokenizer(resolve_model_path("tiny"))
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype=torch.float32).eval()
    loaded = load_prompts(resolve_files(cfg.data)["train"], cfg.data.format, "bench")
    template = run_template(cfg, tokenizer, loaded.format)
    examples = loaded.examples[:prompts]
    model.generation_config.eos_token_id = stop_ids_of(tokenizer, model.generation_config, template)
    return cfg, model, tokenizer, template, examples


def _trl_generation_config(cfg, model, tokenizer, **extra):
    """GRPOTrainer.__init__'s GenerationConfig (trl 1.16, use_vllm off), from lmtune's GRPOConfig."""
    from transformers import GenerationConfig

    from lmtune.train.grpo import grpo_config

    args = grpo_config(cfg, dict(output_dir="/tmp/rl-generation-bench", report_to=[], use_cpu=True,
                                 per_device_train_batch_size=cfg.rl.num_generations))
    eos = model.generation_config.eos_token_id
    eos = [tokenizer.eos_token_id, *[e for e in eos if e != tokenizer.eos_token_id]]
    kwargs = dict(max_new_tokens=args.max_completion_length, do_sample=True, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, temperature=args.temperature,
                  top_p=args.top_p, top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                  cache_implementation=args.cache_implementation)
    kwargs.update(extra)
    return GenerationConfig(**kwargs, disable_compile=True), eos


def _kept_tokens(new: torch.Tensor, stops: list[int]) -> int:
    """Tokens up to and with the first stop id in each row (TRL's completion mask)."""
    is_stop = torch.isin(new, torch.tensor(stops))
    first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, torch.full((new.size(0),), new.size(1)))
    return int(first.sum())


class _Counter:
    """Wraps model.generate to count kept tokens, whichever path calls it."""

    def __init__(self, model, stops):
        self.model, self.stops, self.tokens, self.slots = model, stops, 0, 0
        self._generate = model.generate

    def __call__(self, *args, **kwargs):
        out = self._generate(*args, **kwargs)
        new = out[:, kwargs["input_ids"].shape[1]:]
        self.tokens += _kept_tokens(new, self.stops)
        self.slots += new.numel()   # rows x steps decoded, answers that already stopped included
        return out


def _trl_path(model, tokenizer, template, examples, generations, gen_config):
    from lmtune.data.tokenize import encode_prompt

    def run():
        ids = [encode_prompt(tokenizer, template, ex) for ex in examples for _ in range(generations)]
        tokenizer.padding_side = "left"
        enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding=True)
        with torch.no_grad():
            model.generate(**enc, generation_config=gen_config)
    return run


def _generator_path(model, tokenizer, template, examples, generations, max_new, batch):
    from lmtune.generate import GenerationSettings, Generator

    gen = Generator(model, tokenizer, template)
    settings = GenerationSettings(max_new_tokens=max_new, greedy=False, temperature=1.0, top_p=1.0, batch_size=batch)
    items = [ex for ex in examples for _ in range(generations)]
    return lambda: gen.generate(items, dataclasses.replace(settings, seed=torch.initial_seed()))


def _warm_up(model, tokenizer, template, examples) -> None:
    """One short generate on the same prompts before any path is timed (allocator, kernels)."""
    from lmtune.data.tokenize import encode_prompt

    tokenizer.padding_side = "left"
    enc = tokenizer.pad({"input_ids": [encode_prompt(tokenizer, template, ex) for ex in examples]},
                        return_tensors="pt", padding=True)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)


def measure(prompts: int, generations: int, max_new: int, repeats: int, generator_batch: int,
            nocache: bool) -> dict:
    cfg, model, tokenizer, template, examples = _setup(prompts, generations, max_new)
    trl_config, stops = _trl_generation_config(cfg, model, tokenizer)
    paths = {
        "trl": _trl_path(model, tokenizer, template, examples, generations, trl_config),
        "trl-static": _trl_path(model, tokenizer, template, examples, generations,
                                _trl_generation_config(cfg, model, tokenizer, cache_implementation="static")[0]),
        "generator": _generator_path(model, tokenizer, template, examples, generations, max_new, generator_batch),
    }
    if nocache:
        paths["trl-nocache"] = _trl_path(model, tokenizer, template, examples, generations,
                                         _trl_generation_config(cfg, model, tokenizer, use_cache=False)[0])
    counter = _Counter(model, stops)
    model.generate = counter
    rows = {name: [] for name in paths}
    _warm_up(model, tokenizer, template, examples)
    for r in range(repeats):
        for name, run in paths.items():
            torch.manual_seed(r)
            counter.tokens = counter.slots = 0
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows[name].append((counter.tokens / wall, counter.tokens / cpu, counter.tokens, wall, cpu,
                               counter.slots / cpu))
            print(f"  round {r + 1} {name}: {counter.tokens} tokens ({counter.slots} decoded), {wall:.1f} s, "
                  f"{cpu:.1f} cpu-s", flush=True)
    return {name: {"tok_s": statistics.median(x[0] for x in v), "tok_cpu_s": statistics.median(x[1] for x in v),
                   "tokens": statistics.median(x[2] for x in v), "wall": statistics.median(x[3] for x in v),
                   "cpu": statistics.median(x[4] for x in v), "slot_cpu_s": statistics.median(x[5] for x in v)}
            for name, v in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", default="4,8")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nocache", action="store_true", help="also time trl-nocache (slow)")
    p.add_argument("--generator-batch", type=int, default=8, help="GenerationSettings.batch_size (its default)")
    a = p.parse_args()
    print(f"torch threads {torch.get_num_threads()}; {a.prompts} prompts, up to {a.max_new_tokens} tokens, "
          f"median of {a.repeats} interleaved rounds")
    for g in (int(x) for x in a.generations.split(",")):
        res = measure(a.prompts, g, a.max_new_tokens, a.repeats, a.generator_batch, a.nocache)
        print(f"\nnum_generations={g} ({a.prompts * g} answers)")
        print(f"{'path':12} {'tok/s':>8} {'tok/cpu-s':>10} {'decoded/cpu-s':>14} {'tokens':>7} {'wall s':>7} "
              f"{'cpu s':>7} {'x trl (tok/cpu-s)':>18}")
        for name, m in res.items():
            print(f"{name:12} {m['tok_s']:8.1f} {m['tok_cpu_s']:10.1f} {m['slot_cpu_s']:14.1f} {m['tokens']:7.0f} "
                  f"{m['wall']:7.2f} {m['cpu']:7.2f} {m['tok_cpu_s'] / res['trl']['tok_cpu_s']:18.2f}")


if __name__ == "__main__":
    main()
