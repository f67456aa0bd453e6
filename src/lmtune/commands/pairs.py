"""`lmtune pairs RUN --data FILE --samples N --out PAIRS.jsonl`."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or model) to sample from")
    parser.add_argument("--data", required=True, action="append",
                        help="prompts with reference answers (alpaca, chat or prompt/completion JSONL); repeatable")
    parser.add_argument("--samples", type=int, default=4, help="answers sampled per prompt (default 4)")
    parser.add_argument("--greedy", action="store_true",
                        help="the run's greedy answer (what eval and serve answer) joins each prompt's samples")
    parser.add_argument("--reference", action="store_true",
                        help="the record's own answer joins them too (the chosen one where no answer of the "
                             "run's scores as well)")
    parser.add_argument("--cut", action="store_true",
                        help="cut each rejected answer after its first word that departs from the chosen one, so "
                             "that DPO pushes down the mistake and not the words after it; a cut answer is marked "
                             "rejected_partial and trained without an end after it")
    parser.add_argument("--out", required=True, help="the pairs file to write (JSONL)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per answer at most")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--batch-size", type=int, default=16, help="answers generated per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default=None, help="the metric: sql, json or generic (default: the run's data.task)")
    parser.add_argument("--text-metric", choices=("exact_match", "rouge_l"), default="exact_match",
                        help="the metric on data without a bundled task")
    from lmtune.rag.arguments import add_arguments

    add_arguments(parser)   # a run trained with rag.docs samples with its passages, as generate does


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads)."""
    from lmtune.train.cpu_tuning import target_for_path

    return target_for_path(args.run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmtune.rag.arguments import flags
    from lmtune.rag.inference import rag_settings, run_config_of
    from lmtune.rl.pairs import make_pairs

    rag = rag_settings(run_config_of(args.run), *flags(args))   # the docs are checked before the model loads
    res = make_pairs(args.run, args.data, args.samples, Path(args.out), overwrite=args.overwrite,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     batch_size=args.batch_size, seed=args.seed, task=args.task, text_metric=args.text_metric,
                     rag=rag, greedy=args.greedy, reference=args.reference, cut=args.cut)
    print(f"{res.samples} answers of the run's for each of {res.prompts} prompts: mean score {res.mean_score:.3f}, "
          f"a right answer among them for {100 * res.best_of_n:.1f}% of prompts")
    print(f"wrote {res.pairs} pairs (best vs worst where the scores differ) to {res.out}")
    if not res.pairs:
        print("note: no pairs: every answer to each prompt scored the same; sample more (--samples) or "
              "at a higher --temperature")
    return 0
