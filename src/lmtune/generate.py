"""Generation with the template the run trained with: a base, a base + adapter, or a merged model.

Prompts are rendered by the run's saved template (template.json), so a model trained on the
alpaca layout is asked in the alpaca layout. Batched, left-padded, stops at eos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from lmtune import inference_loading
from lmtune.data.formats import Example
from lmtune.data.templates import Rendered, get_template, template_from_dict
from lmtune.data.tokenize import encode_prompt, special_prefix
from lmtune.data.tokenize_batch import tokenize_batch


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
        loaded = inference_loading.open_path(path)
        model, tokenizer = inference_loading.load_for_inference(loaded, use_adapter=use_adapter)
        return cls(model, tokenizer, template_for(loaded, tokenizer))

    def stop_ids(self) -> list[int]:
        """eos, the model's own extra stop ids (e.g. <|im_end|> in generation_config) and the special
        token the template puts after every trained answer (computed once)."""
        if getattr(self, "_stop_ids", None) is None:
            self._stop_ids = stop_ids_of(self.tokenizer, getattr(self.model, "generation_config", None),
                                         self.template)
        return self._stop_ids

    def stop_texts(self) -> list[str]:
        return stop_texts_of(self.tokenizer, self.stop_ids(), self.template)

    def cut_at_stop(self, text: str, extra: tuple[str, ...] = ()) -> tuple[str, bool]:
        """(text up to the first template or `extra` stop string, whether one was found).
        Stop strings that are special tokens never reach decoded text; text ones (alpaca's next
        "### Instruction:") do when the model runs on into a new example."""
        cut = min((i for i in (text.find(s) for s in (*self.template.stop_strings, *extra) if s) if i >= 0),
                  default=-1)
        return (text[:cut], True) if cut >= 0 else (text, False)

    def generate_kwargs(self, s: GenerationSettings) -> dict:
        """Decoding arguments for model.generate (shared with the server's batched calls)."""
        return dict(do_sample=not s.greedy, temperature=s.temperature if not s.greedy else None,
                    top_p=s.top_p if not s.greedy else None,
                    eos_token_id=self.stop_ids(), pad_token_id=self.tokenizer.pad_token_id)

    def encode(self, item) -> list[int]:
        """A prompt string, a message list, or a data record -> prompt token ids, built exactly
        like the prompt part of the training data (same template, same special-token prefix)."""
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
                out = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, **self.generate_kwargs(s))
            new = out[:, enc["input_ids"].shape[1]:]
            outputs += [self.cut_at_stop(t)[0] for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return outputs


def stop_ids_of(tokenizer, generation_config, template=None) -> list[int]:
    """eos, the generation config's extra eos ids and the template's answer end (readable without
    loading the model, for export)."""
    ids = {tokenizer.eos_token_id}
    extra = getattr(generation_config, "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    if template is not None:
        ids.update(answer_end_ids(tokenizer, template))
    return sorted(i for i in ids if i is not None)


def answer_end_ids(tokenizer, template) -> list[int]:
    """The special token that training puts right after an answer (e.g. <|im_end|> in a model's own
    ChatML-like template, trained before eos): a model that learned to emit it is done there."""
    answer = "4"
    probe = Example("<stop probe>", "chat", messages=[{"role": "user", "content": "2+2?"},
                                                      {"role": "assistant", "content": answer}])
    [tok] = tokenize_batch([probe], template, tokenizer, 4096, False, special_prefix(tokenizer))
    if isinstance(tok, str):  # the template's problem, e.g. the raw template takes no conversations
        return []
    trained = [i for i, m in zip(tok.input_ids, tok.completion_mask) if m]
    for k in range(1, len(trained)):
        if tokenizer.decode(trained[:k]) == answer:
            return [trained[k]] if trained[k] in tokenizer.all_special_ids else []
    return []


def stop_texts_of(tokenizer, stop_ids: list[int], template) -> list[str]:
    """Every stop as text: the stop ids' tokens, then the template's stop strings. The server,
    the GGUF metadata and the Ollama Modelfile all take their stops from here."""
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
    return list(dict.fromkeys([*tokens, *template.stop_strings]))


def template_for(loaded, tokenizer):
    """The template a loaded run/adapter/model generates with: the one it trained with, else
    (a plain model) its own chat template, else ChatML."""
    if loaded.template:
        return template_from_dict(loaded.template, tokenizer)
    return get_template("auto", "chat", tokenizer)
