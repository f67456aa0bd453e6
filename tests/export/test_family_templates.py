"""One template per family, everywhere: for each family's tokenizer and chat template (on a tiny
Llama), the prompt token ids of training (the tokens before the answer), of `lmtune generate`, of
the server, of the GGUF (its chat template
rendered with jinja2 and tokenized from the GGUF's own vocabulary as llama.cpp's chat code does)
and of the Modelfile's Go template (as Ollama does: rendered, tokenized, bos added per add_bos)
are the same ids, with one bos at most."""

from __future__ import annotations

import json
import re

import gguf
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from family_tokenizers import FAMILIES, TURN_END, save_family_model
from gguf_tokenizer import GGUFTokenizer
from go_template import render as render_go
from lmtune.data.templates import Rendered
from lmtune.export import export
from lmtune.generate import Generator
from lmtune.serve.app import _job
from lmtune.serve.models import Served
from lmtune.serve.protocol import ChatRequest, chat_messages

ONE_TURN = [{"role": "user", "content": "Customers in Oslo?"}]
WITH_SYSTEM = [{"role": "system", "content": "Answer in SQL."}, *ONE_TURN]
MULTI_TURN = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": "Count the rows of orders.\nThen stop."}]
NO_SYSTEM = {"mistral"}          # its template refuses a system message
NO_GO: set[str] = set()          # families whose template has no Go translation (none now)
# Phi-3/Phi-4 templates end a finished chat with eos, so an earlier answer renders differently once
# later turns follow: lmtune's training refuses such multi-turn records (ModelTemplate.segments)
TRAIN_ONE_ANSWER = {"phi3", "phi4"}
PRE = {"llama3": "llama-bpe", "smollm3": "llama-bpe", "qwen2.5": "qwen2", "qwen3": "qwen2", "phi4": "gpt-4o"}


def _conversations(family):
    return [ONE_TURN, MULTI_TURN] + ([] if family in NO_SYSTEM else [WITH_SYSTEM])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family in FAMILIES:
        model_dir = save_family_model(root / family, family)
        out[family] = (Generator.load(str(model_dir)), export(str(model_dir), str(root / f"{family}-gguf"), quant="f16"))
    return out


def _llama_cpp_chat(tok: GGUFTokenizer, template, conversation) -> list[int]:
    """common/chat.cpp: render with the GGUF's bos/eos text, drop a leading bos text when add_bos
    (the tokenizer adds it), then tokenize with add_special and parse_special."""
    eos = tok.tokens[tok.fields["tokenizer.ggml.eos_token_id"]]
    text = template.render(messages=conversation, add_generation_prompt=True, bos_token=tok.bos or "", eos_token=eos)
    if tok.add_bos and tok.bos and text.startswith(tok.bos):
        text = text[len(tok.bos):]
    return tok.encode(text)


def _training_prompt(gen, conversation) -> list[int]:
    """Training's ids (lmtune's tokenize_batch) for the conversation + an answer, up to that answer
    (or the problem training reports)."""
    from lmtune.data.formats import Example
    from lmtune.data.tokenize import special_prefix
    from lmtune.data.tokenize_batch import tokenize_batch

    example = Example("<test>", "chat", messages=[*conversation, {"role": "assistant", "content": "SELECT 1;"}])
    [tok] = tokenize_batch([example], gen.template, gen.tokenizer, 512, False, special_prefix(gen.tokenizer))
    if isinstance(tok, str):
        return tok   # the problem training reports for this record
    mask = tok.completion_mask
    start = max(i for i in range(len(mask)) if mask[i] and not (i and mask[i - 1]))   # the last answer's start
    return tok.input_ids[:start]


def _modelfile(path):
    text = path.read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return (template[1] if template else None), (system[1] if system else None)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_prompt_ids_are_the_same_everywhere(exported, family):
    gen, res = exported[family]
    assert gen.template.name == "model"
    tok = GGUFTokenizer(res.gguf)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    gguf_template = env.from_string(tok.fields["tokenizer.chat_template"])
    go, go_system = _modelfile(res.modelfile)
    assert (go is None) == (family in NO_GO)
    stops = [json.loads(x) for x in re.findall(r"^PARAMETER stop (.*)$", res.modelfile.read_text(), re.M)]
    assert {gen.tokenizer.eos_token, TURN_END.get(family, gen.tokenizer.eos_token)} <= set(stops)
    served = Served(family, gen, None, 256)
    for conversation in _conversations(family):
        request = ChatRequest(model=family, messages=conversation)
        ids = {"train": _training_prompt(gen, conversation), "generate": gen.encode(conversation),
               "serve": _job(served, request, chat_messages(request), 8).prompt_ids,
               "gguf": _llama_cpp_chat(tok, gguf_template, conversation)}
        if go is not None:   # Ollama: its tokenizer adds bos per add_bos and does not strip one
            ids["modelfile"] = tok.encode(render_go(go, conversation, go_system))
        want = ids["generate"]
        if family in TRAIN_ONE_ANSWER and conversation is MULTI_TURN:
            assert "renders earlier turns differently" in ids.pop("train")
        assert ids == {k: want for k in ids}, (family, conversation, {k: tok.tokens and [tok.tokens[i] for i in v]
                                                                       for k, v in ids.items()})
        bos = gen.tokenizer.bos_token_id
        assert want[:2] != [bos, bos] and want.count(bos) <= (2 if family == "llama2" and len(conversation) > 2 else 1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_vocabulary_as_llama_cpp_reads_it(exported, family):
    gen, res = exported[family]
    tok, hf = GGUFTokenizer(res.gguf), gen.tokenizer
    kind = FAMILIES[family][0]
    assert tok.model == ("gpt2" if kind == "bpe" else "llama")
    assert tok.tokens[:len(hf)] == [hf.convert_ids_to_tokens(i) for i in range(len(hf))]
    text = "Hello, how are you?\n  SELECT COUNT(*) FROM orders; 12 times 12 = 144 café ☃"  # ☃: not in the vocab
    assert tok.encode(text, add_special=False) == hf(text, add_special_tokens=False)["input_ids"]
    f = tok.fields
    assert f["tokenizer.ggml.add_bos_token"] == bool(FAMILIES[family][6] and family != "phi3")
    if kind == "bpe":
        assert f["tokenizer.ggml.pre"] == PRE[family]
    else:
        assert f["tokenizer.ggml.add_space_prefix"] == (family != "gemma")
        types = f["tokenizer.ggml.token_type"]
        assert types[tok.ids["<0x0A>"]] == gguf.TokenType.BYTE and types[tok.ids["<unk>"]] == gguf.TokenType.UNKNOWN
    turn_end = TURN_END.get(family) if TURN_END.get(family) != hf.eos_token else None   # else eos ends a turn
    for key, token in (("eos", hf.eos_token), ("bos", hf.bos_token), ("eot", turn_end), ("unknown", hf.unk_token),
                       ("padding", FAMILIES[family][4])):   # the saved pad (generate may pick another one)
        if token is not None:
            assert tok.tokens[f[f"tokenizer.ggml.{key}_token_id"]] == token, key


@pytest.mark.parametrize("layout", ["chatml", "alpaca"])
def test_lmtune_layout_on_a_bos_tokenizer(tmp_path, layout):
    """lmtune's own layouts on a tokenizer that adds bos (Llama 2's): generate puts the bos before
    the layout's text; the GGUF's template writes it as {{ bos_token }} (llama.cpp strips it and
    adds one), the Go template leaves it to Ollama; one bos everywhere."""
    import json

    from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate

    model_dir = save_family_model(tmp_path / "m", "llama2")
    template = {"chatml": ChatMLTemplate, "alpaca": AlpacaTemplate}[layout](system_prompt="Answer in SQL.")
    (model_dir / "lmtune_template.json").write_text(json.dumps(template.to_dict()))
    gen = Generator.load(str(model_dir))
    res = export(str(model_dir), str(tmp_path / "out"), quant="f16")
    tok = GGUFTokenizer(res.gguf)
    assert tok.add_bos and tok.fields["tokenizer.chat_template"].startswith("{{- bos_token }}")
    gguf_template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        tok.fields["tokenizer.chat_template"])
    go, go_system = _modelfile(res.modelfile)
    assert "<s>" not in go
    want = gen.encode(ONE_TURN)
    assert want[0] == gen.tokenizer.bos_token_id and want[1] != want[0]
    assert _llama_cpp_chat(tok, gguf_template, ONE_TURN) == want
    assert tok.encode(render_go(go, ONE_TURN, go_system)) == want


def test_raw_template_on_a_bos_tokenizer(tmp_path):
    """A run trained on text (the raw template) exports too: the GGUF template passes the text
    through after {{ bos_token }}, as generate puts the tokenizer's bos before it."""
    import json

    from lmtune.data.templates import RawTemplate

    model_dir = save_family_model(tmp_path / "m", "llama2")
    (model_dir / "lmtune_template.json").write_text(json.dumps(RawTemplate().to_dict()))
    gen = Generator.load(str(model_dir))
    res = export(str(model_dir), str(tmp_path / "out"), quant="f16")
    tok = GGUFTokenizer(res.gguf)
    template = ImmutableSandboxedEnvironment().from_string(tok.fields["tokenizer.chat_template"])
    assert tok.add_bos and _llama_cpp_chat(tok, template, ONE_TURN) == gen.encode(Rendered("Customers in Oslo?"))
