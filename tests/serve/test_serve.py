"""`lmtune serve` through the official openai client against a real server on 127.0.0.1: answers
equal `lmtune generate`'s, streaming, adapters picked by name, batching, errors, the API key."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import openai
import pytest

from lmtune.cli import main as cli
from lmtune.data.templates import AlpacaTemplate
from lmtune.models import resolve_model_path

PROMPTS = ["What is a list in Python?", "Write SQL to count customers.", "Hello!", "Explain the for statement."]


def _adapter(root, name: str, seed: int, template=None):
    """A LoRA adapter over the embedded base with random (non-zero) weights, saved like a run's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = resolve_model_path("tiny")
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = root / name
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(str(out))
    if template is not None:
        (out / "lmtune_template.json").write_text(json.dumps(template.to_dict()))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import load_served
    from lmtune.serve.server import ThreadedServer

    root = tmp_path_factory.mktemp("serve")
    a = _adapter(root, "a", 1)
    b = _adapter(root, "b", 2, AlpacaTemplate())
    served = load_served([str(a), str(b)])
    served["b"].context = 64  # a short context, to check max_tokens capping quickly
    engine = Engine(served)
    with ThreadedServer(create_app(engine)) as url, ThreadedServer(create_app(engine, api_key="sekret")) as locked:
        yield {"url": url, "locked": locked, "engine": engine, "a": a, "b": b}
    engine.close()


def _client(url, key="unused"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def _generate_cli(capsys, path, prompt, n):
    assert cli(["generate", str(path), "--prompt", prompt, "--max-new-tokens", str(n)]) == 0
    return capsys.readouterr().out[:-1]  # print() adds one newline


def test_answers_equal_lmtune_generate_plain_and_streamed(server, capsys):
    c = _client(server["url"])
    for name in ("a", "b"):  # b renders prompts with its saved alpaca template
        expected = _generate_cli(capsys, server[name], PROMPTS[0], 12)
        chat = c.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPTS[0]}],
                                         max_tokens=12, temperature=0)
        assert chat.choices[0].message.content == expected
        comp = c.completions.create(model=name, prompt=PROMPTS[0], max_tokens=12)
        assert comp.choices[0].text == expected
        chunks = list(c.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPTS[0]}],
                                                max_tokens=12, stream=True, stream_options={"include_usage": True}))
        first = chunks[0].choices[0].delta
        assert (first.role, first.content) == ("assistant", "")
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected
        assert chunks[-2].choices[0].finish_reason in ("stop", "length")
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == chat.usage.total_tokens
        streamed = c.completions.create(model=name, prompt=PROMPTS[0], max_tokens=12, stream=True)
        assert "".join(ch.choices[0].text for ch in streamed) == expected
    a_text = c.completions.create(model="a", prompt=PROMPTS[1], max_tokens=12).choices[0].text
    assert a_text != c.completions.create(model="b", prompt=PROMPTS[1], max_tokens=12).choices[0].text


def test_stream_is_sse_ending_with_done(server):
    body = json.dumps({"model": "a", "prompt": "Hi", "max_tokens": 3, "stream": True}).encode()
    req = urllib.request.Request(f"{server['url']}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.read().decode().splitlines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][5:])["object"] == "text_completion"


def test_stop_strings_cut_plain_and_streamed(server):
    c = _client(server["url"])
    full = c.completions.create(model="a", prompt=PROMPTS[2], max_tokens=16).choices[0].text
    stop = full[5:8]
    assert stop and full.find(stop) == 5
    plain = c.completions.create(model="a", prompt=PROMPTS[2], max_tokens=16, stop=[stop]).choices[0]
    assert (plain.text, plain.finish_reason) == (full[:5], "stop")
    streamed = list(c.completions.create(model="a", prompt=PROMPTS[2], max_tokens=16, stop=stop, stream=True))
    assert "".join(ch.choices[0].text for ch in streamed) == full[:5]
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_sixteen_concurrent_clients_are_batched_without_cross_talk(server):
    from lmtune.generate import GenerationSettings

    engine = server["engine"]
    jobs = [(("a", "b")[i % 2], PROMPTS[i % 4] + f" ({i})", 3 + i) for i in range(16)]
    expected = []
    for m, p, n in jobs:  # one prompt at a time, each with its own adapter active
        engine.served[m].activate()
        expected += engine.served[m].gen.generate([p], GenerationSettings(max_new_tokens=n))
    c, answers = _client(server["url"]), [None] * 16

    def ask(i):
        m, p, n = jobs[i]
        answers[i] = c.chat.completions.create(model=m, messages=[{"role": "user", "content": p}], max_tokens=n)

    calls, rows = engine.calls, engine.rows
    engine.gate.clear()  # hold the worker until all 16 requests wait: one batch per model
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    while engine.queue.qsize() < 15:  # the worker holds the first request
        threading.Event().wait(0.01)
    engine.gate.set()
    for t in threads:
        t.join(timeout=120)
    assert [a.choices[0].message.content for a in answers] == expected
    assert all(a.usage.completion_tokens <= n for a, (_, _, n) in zip(answers, jobs))
    assert (engine.calls - calls, engine.rows - rows) == (2, 16)


def test_bad_requests_get_openai_error_bodies(server):
    c = _client(server["url"])
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and "a, b" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as err:
        c.chat.completions.create(model="a", messages=[], max_tokens=2)
    assert "messages" in err.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        c.chat.completions.create(model="a", messages=[{"role": "user", "content": "hi"}], temperature=7)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="a", messages=[{"role": "user", "content": "hi"}], n=2)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(model="b", prompt="word " * 80, max_tokens=2)
    assert err.value.body["code"] == "context_length_exceeded"
    # unknown fields are ignored; max_tokens is capped by the context (b takes 64 tokens)
    capped = c.completions.create(model="b", prompt="Hi", max_tokens=10_000, extra_body={"frobnicate": True})
    assert capped.usage.total_tokens <= 64
    req = urllib.request.Request(f"{server['url']}/v1/chat/completions", b"{not json",
                                 {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 400 and "error" in json.loads(http.value.read())


def test_api_key(server):
    with pytest.raises(openai.AuthenticationError):
        _client(server["locked"], "wrong").models.list()
    req = urllib.request.Request(f"{server['locked']}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 401 and json.loads(http.value.read())["error"]["code"] == "invalid_api_key"
    assert [m.id for m in _client(server["locked"], "sekret").models.list()] == ["a", "b"]
    with urllib.request.urlopen(f"{server['locked']}/health", timeout=30) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_port_in_use_and_bad_model_sets_exit_2(server, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert cli(["serve", "tiny", "--port", str(busy.getsockname()[1])]) == 2
        assert "already in use" in capsys.readouterr().err
    finally:
        busy.close()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert cli(["serve", "tiny", str(server["a"]), "--port", str(port)]) == 2
    assert "has no adapter" in capsys.readouterr().err
