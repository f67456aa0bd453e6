"""`lmtune serve RUN --docs`: each request retrieves for its last user message; the answer is the one
`lmtune generate` gives with the same retrieval, and the response lists the sources."""

import json
import urllib.request

import openai
import pytest

from lmtune.cli import main
from lmtune.rag.inference import rag_settings, run_config_of
from rag_runs import rag_run, write_catalogue

QUESTION = "How many euros does the Brisa toaster cost?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import add_retrieval, load_served
    from lmtune.serve.server import ThreadedServer

    root = tmp_path_factory.mktemp("rag_serve")
    docs = write_catalogue(root / "catalogue.jsonl")
    run = rag_run(root, docs, top_k=2)
    served = load_served([str(run)])
    add_retrieval(served, [rag_settings(run_config_of(str(run)), None)])   # the run's own rag.docs
    engine = Engine(served)
    with ThreadedServer(create_app(engine)) as url:
        yield {"url": url, "run": run, "docs": docs}
    engine.close()


def _post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def test_chat_answer_equals_generate_with_docs_and_lists_sources(server, capsys):
    assert main(["generate", str(server["run"]), "--prompt", QUESTION, "--max-new-tokens", "10"]) == 0
    expected = capsys.readouterr().out[:-1]
    messages = [{"role": "user", "content": "What does the Delta lamp cost?"}, {"role": "assistant", "content": "22"},
                {"role": "user", "content": QUESTION}]
    body = _post(server["url"], "/v1/chat/completions", {"model": "run", "messages": messages[2:],
                                                          "max_tokens": 10, "temperature": 0})
    assert body["choices"][0]["message"]["content"] == expected
    assert body["sources"][0]["id"] == "toaster" and len(body["sources"]) == 2   # the run's rag.top_k
    assert body["sources"][0]["source"] == f"{server['docs']}:2" and "35 euros" in body["sources"][0]["text"]
    # the query is the last user message only: earlier turns do not pull in their own passages
    multi = _post(server["url"], "/v1/chat/completions", {"model": "run", "messages": messages, "max_tokens": 2})
    assert [s["id"] for s in multi["sources"]] == [s["id"] for s in body["sources"]]
    # the passages are in the prompt the model read
    plain = _post(server["url"], "/v1/chat/completions", {"model": "run", "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "zebra?"}]})
    assert plain["sources"] == [] and body["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40


def test_completions_and_streams_carry_sources(server):
    body = _post(server["url"], "/v1/completions", {"model": "run", "prompt": "Cumulus blender watt", "max_tokens": 3})
    assert body["sources"][0]["id"] == "blender"
    client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="run", messages=[{"role": "user", "content": QUESTION}],
                                                 max_tokens=4, stream=True))
    assert chunks[0].model_extra["sources"][0]["id"] == "toaster"
    assert all("sources" not in (c.model_extra or {}) for c in chunks[1:])
    reply = client.chat.completions.create(model="run", messages=[{"role": "user", "content": QUESTION}], max_tokens=2)
    assert reply.model_extra["sources"][0]["id"] == "toaster"   # what an OpenAI client sees


def test_serve_refuses_bad_docs_before_binding(server, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["serve", str(server["run"]), "--docs", str(bad), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: malformed JSON" in err and "port" not in err
