"""Catastrophic-forgetting check: perplexity on general text (the bundled probe) before and after
fine-tuning. A model that has over-specialised assigns general text a much higher perplexity than
its base did; the ratio after/before is compared with `eval.forgetting_warn` / `eval.forgetting_fail`.

Perplexity here is exp(total negative log-likelihood / total predicted tokens) over all passages,
so long and short passages weigh by their token count, the same definition as validation perplexity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lmtune.errors import DataError
from lmtune.tasks import probe_file

OK, WARNING, FORGOTTEN = "ok", "warning", "forgotten"
MAX_PASSAGES = 200      # the probe is small; the cap keeps a CPU check to seconds if it grows
# Passages are cut at a fixed length, not the run's data.max_length, so probe perplexities of runs
# with different settings compare.
PROBE_MAX_TOKENS = 512


@dataclass
class ForgettingResult:
    base_perplexity: float
    tuned_perplexity: float
    ratio: float
    verdict: str
    warn_at: float
    fail_at: float
    passages: int
    tokens: int
    probe: str

    def to_dict(self) -> dict:
        return asdict(self)

    def explain(self) -> str:
        head = {OK: "general text is as predictable as before",
                WARNING: "general text became noticeably harder to predict",
                FORGOTTEN: "the model has lost much of its general ability"}[self.verdict]
        return (f"{self.verdict}: probe perplexity {self.base_perplexity:.1f} -> {self.tuned_perplexity:.1f} "
                f"(x{self.ratio:.2f}; warn above x{self.warn_at:g}, forgotten above x{self.fail_at:g}): {head}")


def verdict(ratio: float, warn_at: float, fail_at: float) -> str:
    """ok up to `warn_at` (inclusive), warning up to `fail_at` (inclusive), forgotten above."""
    if ratio != ratio or ratio > fail_at:   # NaN (a diverged model) counts as forgotten
        return FORGOTTEN
    if ratio > warn_at:
        return WARNING
    return OK


def load_probe(path: Path | None = None, limit: int = MAX_PASSAGES) -> list[str]:
    """The probe's passages ({"text": ...} per line)."""
    if path is None:
        path = probe_file()   # raises a UserError naming the rebuild command when missing
    texts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise DataError(f"{path}:{n}: expected {{\"text\": ...}}")
        texts.append(rec["text"])
        if len(texts) >= limit:
            break
    return texts


def probe_max_length(model) -> int:
    """PROBE_MAX_TOKENS, or less where the model has fewer positions."""
    cfg = getattr(model, "config", None)
    limits = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions")]
    return min([PROBE_MAX_TOKENS] + [x for x in limits if isinstance(x, int) and x > 0])


def compare_perplexity(base_ppl: float, tuned_ppl: float, warn_at: float, fail_at: float,
                       passages: int, tokens: int, probe: str) -> ForgettingResult:
    ratio = tuned_ppl / base_ppl if base_ppl > 0 else float("nan")
    return ForgettingResult(base_ppl, tuned_ppl, ratio, verdict(ratio, warn_at, fail_at),
                            warn_at, fail_at, passages, tokens, probe)
