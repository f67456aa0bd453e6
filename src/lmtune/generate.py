"""Generation with the template the run trained with: a base, a base + adapter, or a merged model.

Prompts are rendered by the run's saved template (template.json), so a model trained on the
alpaca layout is asked in the alpaca layout. Batched, left-padded, stops at eos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    greedy: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 8
    seed: int = 0


class Generator:
    """Holds a loaded model + tokenizer + template; `generate` takes prompts as message lists or
    records (alpaca/chat/prompt_completion) and returns the generated answers only."""

    def __init__(self, model, tokenizer, template):
        self.model, self.tokenizer, self.template = model, tokenizer, template

    @classmethod
    def load(cls, path: str, use_adapter: bool = True) -> "Generator":
        from lmtune.data.templates import get_template, template_from_dict
        from lmtune.inference_loading import load_for_inference, open_path

        loaded = open_path(path)
        model, tokenizer = load_for_inference(loaded, use_adapter=use_adapter)
        if loaded.template:
            template = template_from_dict(loaded.template, tokenizer)
        else:  # a plain model: its own chat template, else ChatML
            template = get_template("auto", "chat", tokenizer)
        return cls(model, tokenizer, template)

    def stop_ids(self) -> list[int]:
        """eos plus the model's own extra stop ids (e.g. ChatML's <|im_end|> in generation_config)."""
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra])
        return sorted(i for i in ids if i is not None)

    def encode(self, item) -> list[int]:
        """A prompt string, a message list, or a data record -> prompt token ids, built exactly
        like the prompt part of the training data (same template, same special-token prefix)."""
        from lmtune.data.templates import Rendered
        from lmtune.data.tokenize import encode_prompt

        if isinstance(item, str) and not isinstance(item, Rendered):
            item = [{"role": "user", "content": item}]
        return encode_prompt(self.tokenizer, self.template, item)

    def generate(self, items: Iterable, settings: GenerationSettings | None = None,
                 progress: bool = False) -> list[str]:
        import torch

        s = settings or GenerationSettings()
        prompts = [self.encode(it) for it in items]
        outputs: list[str] = []
        batches = range(0, len(prompts), s.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="generating", unit="batch")
        torch.manual_seed(s.seed)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so answers are contiguous
        for start in batches:
            chunk = prompts[start:start + s.batch_size]
            enc = self.tokenizer.pad({"input_ids": chunk}, return_tensors="pt", padding=True)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = self.model.generate(
                    **enc, max_new_tokens=s.max_new_tokens, do_sample=not s.greedy,
                    temperature=s.temperature if not s.greedy else None,
                    top_p=s.top_p if not s.greedy else None,
                    eos_token_id=self.stop_ids(), pad_token_id=self.tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs
