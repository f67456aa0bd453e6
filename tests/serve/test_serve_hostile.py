"""`lmtune serve` under hostile input, against a real uvicorn server on 127.0.0.1 over the embedded
tiny base: every failure is an OpenAI error body with the right status, an oversized body is
refused before it is read while /health answers, a bad --port exits 2 before any model loads."""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest
import requests

from lmtune.cli import main as cli

HUGE = 30 * 1024 * 1024


@pytest.fixture(scope="module")
def server():
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import load_served
    from lmtune.serve.server import ThreadedServer

    engine = Engine(load_served(["tiny"]))
    with ThreadedServer(create_app(engine)) as url:
        yield {"url": url, "engine": engine}
    engine.close()


def _post(url: str, body: bytes, path: str = "/v1/chat/completions") -> requests.Response:
    return requests.post(url + path, data=body, headers={"content-type": "application/json"}, timeout=60)


def _error(resp: requests.Response) -> dict:
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize("port", ["70000", "-1", "0", "65536"])
def test_port_out_of_range_exits_2_before_loading(port, capsys, monkeypatch):
    import lmtune.serve.models as models

    monkeypatch.setattr(models, "load_served", lambda paths: pytest.fail("a model was loaded"))
    assert cli(["serve", "tiny", "--port", port]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}" in err and "65535" in err and "Traceback" not in err


def test_lone_surrogate_is_a_400_in_every_text_field(server):
    raw = '{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud800 there"}], "max_tokens": 2}'
    err = _error(resp := _post(server["url"], raw.encode()))
    assert resp.status_code == 400 and err["param"] == "messages[0].content" and "surrogate" in err["message"]
    parts = ('{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", '
             '"content": [{"type": "text", "text": "\\udfff"}]}]}')
    assert _post(server["url"], parts.encode()).status_code == 400
    comp = '{"model": "tiny", "prompt": "a\\udc80", "max_tokens": 2}'
    resp = _post(server["url"], comp.encode(), "/v1/completions")
    assert resp.status_code == 400 and _error(resp)["param"] == "prompt"
    stop = '{"model": "tiny", "prompt": "a", "stop": ["\\ud800"], "max_tokens": 2}'
    resp = _post(server["url"], stop.encode(), "/v1/completions")
    assert resp.status_code == 400 and _error(resp)["param"] == "stop"
    # a surrogate in the model name: a 404 whose body still encodes
    name = '{"model": "\\ud800", "prompt": "a", "max_tokens": 2}'
    resp = _post(server["url"], name.encode(), "/v1/completions")
    assert resp.status_code == 404 and _error(resp)["code"] == "model_not_found"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_out_of_range_seed_is_a_422_and_in_range_seeds_work(server, seed):
    c = openai.OpenAI(base_url=f"{server['url']}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        c.completions.create(model="tiny", prompt="Hi", max_tokens=2, temperature=0.8, seed=seed)
    assert err.value.body["param"] == "seed"
    for ok in (2**63 - 1, -(2**63)):
        assert c.completions.create(model="tiny", prompt="Hi", max_tokens=2, temperature=0.8, seed=ok).choices


def test_validation_and_routing_errors_have_the_openai_shape(server):
    resp = _post(server["url"], json.dumps({"model": "tiny", "messages": "hi"}).encode())
    assert resp.status_code == 422 and _error(resp)["param"] == "messages"
    resp = _post(server["url"], json.dumps({"model": "nope", "prompt": "x"}).encode(), "/v1/completions")
    assert resp.status_code == 404 and _error(resp)["code"] == "model_not_found"
    resp = requests.get(server["url"] + "/v1/nothing-here", timeout=30)
    assert resp.status_code == 404 and "/v1/nothing-here" in _error(resp)["message"]
    resp = requests.get(server["url"] + "/v1/chat/completions", timeout=30)
    assert resp.status_code == 405 and _error(resp)


def test_an_unexpected_error_is_a_json_500_not_plain_text(server, monkeypatch):
    from lmtune.generate import Generator

    def broken(self, item):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Generator, "encode", broken)
    resp = _post(server["url"], json.dumps({"model": "tiny", "prompt": "x"}).encode(), "/v1/completions")
    err = _error(resp)
    assert resp.status_code == 500 and err["type"] == "server_error" and "RuntimeError" in err["message"]


def _health_while(url: str, send) -> tuple[float, list[float]]:
    """Run send() (a huge request) while polling /health; (send's seconds, /health latencies)."""
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            t = time.perf_counter()
            assert requests.get(url + "/health", timeout=10).status_code == 200
            latencies.append(time.perf_counter() - t)

    poller = threading.Thread(target=poll)
    poller.start()
    t = time.perf_counter()
    try:
        send()
    finally:
        took = time.perf_counter() - t
        done.set()
        poller.join()
    return took, latencies


def test_a_30_mb_body_is_refused_before_it_is_read(server):
    host, port = server["url"][7:].split(":")
    answer = {}

    def send():
        # Declared 30 MB, but only the headers are sent: the answer must come without the body.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {HUGE}\r\n\r\n".encode() + b'{"model": "tiny", "messages": [')
            raw = b""
            while chunk := s.recv(65536):  # the server closes the connection after its answer
                raw += chunk
            answer["raw"] = raw.decode()

    took, latencies = _health_while(server["url"], send)
    head, _, body = answer["raw"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and json.loads(body)["error"]["code"] == "request_too_large"
    assert took < 1.0 and latencies


def test_a_chunked_body_is_counted_and_refused_past_the_limit(server):
    sent = []

    def chunks():
        piece = b'{"model": "tiny", "prompt": "' + b"a" * (1024 * 1024)
        for _ in range(30):
            sent.append(len(piece))
            yield piece
            piece = b"a" * (1024 * 1024)

    resp = {}

    def send():
        try:
            resp["r"] = requests.post(server["url"] + "/v1/completions", data=chunks(),
                                   headers={"content-type": "application/json"}, timeout=30)
        except requests.ConnectionError as exc:  # the server may close before the client stops sending
            resp["exc"] = exc

    took, _ = _health_while(server["url"], send)
    if "r" in resp:
        assert resp["r"].status_code == 413 and _error(resp["r"])["code"] == "request_too_large"
    assert sum(sent) < 20 * 1024 * 1024  # the server stopped reading after 4 MiB (+ socket buffers)
    assert took < 5.0


def test_a_prompt_far_past_the_context_is_refused_before_tokenizing(server):
    c = openai.OpenAI(base_url=f"{server['url']}/v1", api_key="x", max_retries=0)
    # 3 MB of content: under the body limit, far past the context: a 400 from a floor on its tokens
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 600_000}],
                                  max_tokens=2)
    assert err.value.body["code"] == "context_length_exceeded" and "at least" in err.value.body["message"]
    # just past the context: tokenized, and the exact count given
    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(model="tiny", prompt="word " * 1_100, max_tokens=2)
    assert err.value.body["code"] == "context_length_exceeded" and "at least" not in err.value.body["message"]


def test_serve_help_shows_the_body_limit(capsys):
    with pytest.raises(SystemExit):
        cli(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--max-request-bytes" in out and "4194304" in out
