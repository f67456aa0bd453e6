"""One template everywhere: the same conversation rendered by training's tokenization, `lmtune
generate`, the server, the GGUF's chat template (rendered with jinja2 as transformers and llama.cpp
do) and the Ollama Modelfile gives the same prompt text and the same stops."""

from __future__ import annotations

import json
import re
import shutil

import gguf
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from data_reference import tokenize_example
from go_template import render as render_go
from lmtune.data.formats import Example
from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate, get_template
from lmtune.export import export
from lmtune.generate import Generator
from lmtune.serve.app import _job
from lmtune.serve.models import Served
from lmtune.serve.protocol import ChatRequest, chat_messages
from tiny_models import save_tiny_model

ANSWER = "SELECT name FROM customers WHERE city = 'Oslo';"
ONE_TURN = [{"role": "user", "content": "Customers in Oslo?"}]
WITH_SYSTEM = [{"role": "system", "content": "Answer in SQL."}, *ONE_TURN]
MULTI_TURN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, *ONE_TURN]
CASES = {  # template -> conversations it takes (alpaca takes one turn)
    "model": [ONE_TURN, WITH_SYSTEM, MULTI_TURN],
    "chatml": [ONE_TURN, WITH_SYSTEM, MULTI_TURN],
    "alpaca": [ONE_TURN, WITH_SYSTEM],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per template: a model directory carrying it (as a merged run does), its Generator, and the
    GGUF + Modelfile export wrote for it."""
    root = tmp_path_factory.mktemp("one_template")
    base = save_tiny_model(root / "base", "llama")
    out = {}
    for name in CASES:
        model_dir = root / name
        shutil.copytree(base, model_dir)
        template = {"model": None, "chatml": ChatMLTemplate(system_prompt="Be terse."),
                    "alpaca": AlpacaTemplate(system_prompt="You write SQL.")}[name]
        if template is not None:
            (model_dir / "lmtune_template.json").write_text(json.dumps(template.to_dict()))
        gen = Generator.load(str(model_dir))
        res = export(str(model_dir), str(root / f"{name}-gguf"), quant="f16")
        out[name] = (gen, res)
    return out


def _modelfile(path):
    text = path.read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)[1]
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    stops = [json.loads(s) for s in re.findall(r"^PARAMETER stop (.*)$", text, re.M)]
    return template, system[1] if system else None, stops


def _training(gen, conversation):
    """Training's token ids for the conversation + ANSWER: the prompt text before the final answer,
    and the token that follows the answer (what the model learns to emit when done)."""
    example = Example("<test>", "chat", messages=[*conversation, {"role": "assistant", "content": ANSWER}])
    tok = tokenize_example(example, gen.template, gen.tokenizer, max_length=512)
    ids, mask = tok.input_ids, tok.completion_mask
    start = len(mask) - 1
    while mask[start - 1]:
        start -= 1
    answer_ids = ids[start:]
    k = next(k for k in range(len(answer_ids) + 1) if gen.tokenizer.decode(answer_ids[:k]) == ANSWER)
    return gen.tokenizer.decode(ids[:start]), answer_ids[k]


@pytest.mark.parametrize("name", list(CASES))
def test_same_prompt_and_stops_everywhere(exported, name):
    gen, res = exported[name]
    assert gen.template.name == name
    stops = gen.stop_texts()
    served = Served(name, gen, None, 256)
    reader = gguf.GGUFReader(str(res.gguf))
    fields = {k: v.contents() for k, v in reader.fields.items() if k.startswith(("tokenizer.", "lmtune."))}
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    gguf_template = env.from_string(fields["tokenizer.chat_template"])
    assert (res.gguf.parent / "chat_template.jinja").read_text() == fields["tokenizer.chat_template"]
    go_template, go_system, modelfile_stops = _modelfile(res.modelfile)
    for conversation in CASES[name]:
        train_prompt, after_answer = _training(gen, conversation)
        request = ChatRequest(model=name, messages=conversation)
        prompts = {
            "generate": gen.tokenizer.decode(gen.encode(conversation)),
            "serve": gen.tokenizer.decode(_job(served, request, chat_messages(request), 8).prompt_ids),
            "gguf": gguf_template.render(messages=conversation, add_generation_prompt=True),
            "modelfile": render_go(go_template, conversation, go_system),
        }
        assert prompts == {k: train_prompt for k in prompts}, conversation
        assert gen.tokenizer.convert_ids_to_tokens(after_answer) in stops  # training's end is a stop
    # stops: generate == serve (same Generator, what the engine cuts at) == GGUF == Modelfile
    assert fields["lmtune.stop"] == stops
    tokens = fields["tokenizer.ggml.tokens"]
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if key in fields:
            assert tokens[fields[key]] in stops
    assert modelfile_stops == [s.strip() for s in stops]
    if name == "chatml":
        assert stops[-1] == "<|im_end|>" and fields["tokenizer.ggml.eot_token_id"] == gen.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if name == "alpaca":
        assert "\n### Instruction:" in stops


def test_plain_model_template_is_the_tokenizer_one(exported):
    gen, _ = exported["model"]
    assert gen.template.to_dict()["chat_template"] == get_template("auto", "chat", gen.tokenizer).chat_template
