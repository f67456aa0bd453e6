"""Continuous batching in `lmtune serve` (serve/engine.py), against a real uvicorn server on
127.0.0.1 over the embedded tiny base: requests join a running batch between steps without
changing their answers, a short request finishes while a long one still runs, and a client that
goes away (streaming or not) stops its row. No wall-clock asserts: steps and order are compared."""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest
import requests

from lmtune.generate import GenerationSettings

LONG = "What is a list in Python?"   # the tiny base runs on for hundreds of tokens here
SHORT = ["Hello!", "Write SQL to count customers.", "Explain the for statement."]


@pytest.fixture(scope="module")
def server():
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import load_served
    from lmtune.serve.server import ThreadedServer

    engine = Engine(load_served(["tiny"]))
    with ThreadedServer(create_app(engine)) as url:
        yield {"url": url, "engine": engine, "gen": engine.served["tiny"].gen}
    engine.close()


def _client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=300)


def _health(url) -> dict:
    return requests.get(url + "/health", timeout=30).json()


def _wait(url, key, value, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = _health(url)
        if h[key] == value:
            return h
        time.sleep(0.05)
    raise AssertionError(f"/health never showed {key}={value}: {h}")


def test_short_requests_join_a_running_long_one_and_answers_do_not_change(server):
    c, gen, engine = _client(server["url"]), server["gen"], server["engine"]
    expected_long = gen.generate([LONG], GenerationSettings(max_new_tokens=60))[0]
    expected = [gen.generate([p], GenerationSettings(max_new_tokens=8))[0] for p in SHORT]
    steps, calls = engine.steps, engine.calls
    long_text, long_done, started = [], threading.Event(), threading.Event()

    def ask_long():
        for chunk in c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": LONG}],
                                               max_tokens=60, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                long_text.append(chunk.choices[0].delta.content)
                started.set()
        long_done.set()

    t = threading.Thread(target=ask_long)
    t.start()
    assert started.wait(120)
    answers, finished_while_long_ran = [None] * 3, [None] * 3

    def ask(i):
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": SHORT[i]}], max_tokens=8)
        answers[i] = r.choices[0].message.content
        finished_while_long_ran[i] = not long_done.is_set()

    shorts = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for s in shorts:
        s.start()
    for s in shorts:
        s.join(120)
    t.join(300)
    assert answers == expected and "".join(long_text) == expected_long
    assert all(finished_while_long_ran)
    # they ran beside the long one: fewer steps than one after another, and joined in their own pass(es)
    assert engine.steps - steps < 60 + 3 * 8 and engine.calls - calls >= 2


def test_a_sampled_answer_depends_on_its_seed_only(server):
    c = _client(server["url"])

    def ask(seed, prompt=SHORT[0]):
        return c.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=1.0,
                                    seed=seed).choices[0].text

    alone = ask(7)
    assert ask(7) == alone
    beside = [None]
    other = threading.Thread(target=lambda: beside.__setitem__(0, ask(8, LONG)))
    other.start()
    assert ask(7) == alone
    other.join(120)


def _raw_request(url: str, body: dict) -> socket.socket:
    host, port = url[7:].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_client_that_goes_away_stops_its_row(server, stream):
    url = server["url"]
    before = _wait(url, "generating", 0)
    s = _raw_request(url, {"model": "tiny", "messages": [{"role": "user", "content": LONG}],
                           "max_tokens": 1000, "stream": stream})
    _wait(url, "generating", 1)
    s.close()
    after = _wait(url, "generating", 0)
    assert after["steps"] - before["steps"] < 500  # far from the 1000 it asked for


def test_a_failing_step_answers_its_clients_with_a_500_and_the_engine_goes_on(server, monkeypatch):
    model = server["gen"].model

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (injected)")

    monkeypatch.setattr(model, "forward", broken)
    c = _client(server["url"])
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert err.value.body["type"] == "server_error" and "out of memory (injected)" in err.value.body["message"]
    resp = requests.post(server["url"] + "/v1/completions", timeout=60, stream=True,
                         json={"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": True})
    events = [line[5:].strip() for line in resp.iter_lines(decode_unicode=True) if line.startswith("data:")]
    assert json.loads(events[-2])["error"]["type"] == "server_error" and events[-1] == "[DONE]"
    monkeypatch.undo()
    assert c.completions.create(model="tiny", prompt="hi", max_tokens=3).choices[0].text is not None
    assert _health(server["url"])["generating"] == 0
