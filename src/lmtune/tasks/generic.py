"""Scorer for the user's own data, where no task-specific metric exists.

- exact_match: answer equals the reference after trimming and collapsing whitespace.
- rouge_l: ROUGE-L F1 (longest common subsequence of words) from the `rouge-score` package.
  Its default tokenizer keeps only ASCII letters and digits, lower-cased: text in other scripts
  scores 0 there, so read exact_match for such data.
"""

from __future__ import annotations

from lmtune.tasks.base import Task, check_lengths


def _norm(text: str) -> str:
    return " ".join((text or "").split())


class GenericTask(Task):
    def __init__(self, name: str = "generic", description: str = ""):
        super().__init__(name=name, format="auto", files={}, description=description,
                         metrics=("exact_match", "rouge_l"))
        self._scorer = None

    def _rouge(self):
        if self._scorer is None:  # imported on first use: keeps `import lmtune.tasks` light
            from rouge_score import rouge_scorer
            self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        return self._scorer

    def score_examples(self, predictions: list[str], references: list[dict | str]) -> list[dict[str, float]]:
        check_lengths(predictions, references)
        out = []
        for pred, ref in zip(predictions, references):
            gold = self.reference(ref)
            rouge = self._rouge().score(gold, pred or "")["rougeL"].fmeasure
            out.append({"exact_match": float(_norm(pred) == _norm(gold)), "rouge_l": float(rouge)})
        return out
