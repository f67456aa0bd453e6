"""The two CPU training fast paths give the results of the paths they replace:
per-document attention for packed rows (lmtune/train/packed_attention.py) and the loss computed from
logits at label positions only (lmtune/train/trainer.py, train.lm_head=label_logits)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import lmtune.train.recipe as lt
from lmtune.config import load_config
from lmtune.models import Device, use_training_attention
from lmtune.train.packed_attention import NAME, register
from lmtune.run.layout import RunDir
from tiny_models import model_config, save_tiny_model, write_alpaca

DOCS = (10, 13, 7)   # three documents packed into one 30-token row


def _packed_inputs(vocab: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (1, sum(DOCS)), generator=g)
    pos = torch.cat([torch.arange(n) for n in DOCS])[None]
    cu = torch.tensor([0, *torch.tensor(DOCS).cumsum(0).tolist()], dtype=torch.int32)
    return {"input_ids": ids, "position_ids": pos, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": max(DOCS), "max_length_k": max(DOCS)}


def _model(arch: str, attn: str, **overrides):
    torch.manual_seed(0)
    cfg = model_config(arch, 300)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()


def _logits_and_grads(model, inputs):
    model.zero_grad()
    out = model(**inputs, use_cache=False)   # as in training: transformers finds packing only without a cache
    out.logits.square().mean().backward()   # any scalar of every position's output
    return out.logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_attention_equals_each_document_alone(arch):
    register()
    inputs = _packed_inputs(300)
    model = _model(arch, NAME)
    packed, _ = _logits_and_grads(model, inputs)
    start = 0
    for n in DOCS:   # ground truth: every document on its own, plain SDPA, no packing at all
        alone = model(input_ids=inputs["input_ids"][:, start:start + n]).logits.detach()
        torch.testing.assert_close(packed[:, start:start + n], alone, atol=1e-5, rtol=1e-5)
        start += n


def test_packed_attention_matches_sdpa_outputs_and_gradients():
    register()
    inputs = _packed_inputs(300)
    ref_logits, ref_grads = _logits_and_grads(_model("llama", "sdpa"), inputs)
    logits, grads = _logits_and_grads(_model("llama", NAME), inputs)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)


def test_packed_attention_falls_back_for_a_short_sliding_window_and_for_padded_batches():
    register()
    # Mistral with a 4-token window: documents are longer, so the model's own windowed mask must run
    inputs = _packed_inputs(300)
    ref = _model("mistral", "sdpa", sliding_window=4)(**inputs, use_cache=False).logits
    got = _model("mistral", NAME, sliding_window=4)(**inputs, use_cache=False).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # two padded rows with an attention mask (no document boundaries): plain SDPA
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ref = _model("llama", "sdpa")(input_ids=ids, attention_mask=mask).logits
    got = _model("llama", NAME)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, :8], ref[1, :8], atol=1e-5, rtol=1e-5)


def test_packed_attention_is_chosen_only_for_packed_cpu_training(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", "llama")

    def chosen(*overrides, device="cpu"):
        cfg = load_config(None, [f"model.name_or_path={model_dir}", "data.task=sql", *overrides])
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        return use_training_attention(model, cfg, Device(device, False, device)), model

    name, model = chosen("data.packing=true")
    assert name == NAME and model.config._attn_implementation == NAME
    assert chosen("data.packing=false")[0] is None
    assert chosen("data.packing=true", device="cuda")[0] is None
    assert chosen("data.packing=true", "model.attn_implementation=eager")[0] is None
    # windowed layers keep the model's own masks (Qwen2-MoE builds its window only into the mask)
    windowed = AutoModelForCausalLM.from_config(model_config("qwen2", 300), attn_implementation="sdpa")
    windowed.config.use_sliding_window, windowed.config.sliding_window = True, 4
    cfg = load_config(None, [f"model.name_or_path={model_dir}", "data.task=sql", "data.packing=true"])
    assert use_training_attention(windowed, cfg, Device("cpu", False, "cpu")) is None
    windowed.config.use_sliding_window = False
    windowed.config.layer_types = ["sliding_attention", "full_attention"]
    assert use_training_attention(windowed, cfg, Device("cpu", False, "cpu")) is None
    # the kernel is a training-time choice: a saved model says nothing about it
    model.save_pretrained(tmp_path / "saved")
    assert "lmtune" not in (tmp_path / "saved" / "config.json").read_text()


# ---------------------------------------------------------------- loss at label positions

def _trainer(tmp_path, packing: bool):
    model_dir = save_tiny_model(tmp_path / "base", "llama")
    data = write_alpaca(tmp_path / "train.jsonl", 24)
    cfg = load_config(None, [f"model.name_or_path={model_dir}", f"data.train={data}",
                             f"output.dir={tmp_path / 'run'}", "data.val_split=0", "data.max_length=128",
                             f"data.packing={str(packing).lower()}", "train.batch_size=2",
                             "data.template=alpaca", "train.max_steps=1", "output.report=false",
                             "lora.dropout=0"])   # no random masks: both paths see one network
    run = RunDir(cfg.output.dir)
    setup = lt._setup(cfg, run, resume=False)
    return lt._build_trainer(cfg, run, setup)


@pytest.mark.parametrize("packing", [True, False])
def test_label_logits_loss_equals_trl_fused_loss_and_gradients(tmp_path, packing):
    trainer = _trainer(tmp_path, packing)
    assert trainer.lm_head == "label_logits"          # the CPU default
    model = trainer.model
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    results = {}
    for head in ("fused", "label_logits"):
        trainer.lm_head = head
        for n_items in (None, torch.tensor(50)):
            model.zero_grad()
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
            results[head, n_items is None] = (loss.detach(), grads)
    for normalised in (True, False):
        ref_loss, ref_grads = results["fused", normalised]
        loss, grads = results["label_logits", normalised]
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
        assert any(g.abs().sum() > 0 for g in grads)
        for g, ref in zip(grads, ref_grads):
            torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)
    assert trainer._metrics["train"]["mean_token_accuracy"]    # logged on both paths
    # one running token count (TRL's), advanced alike by both paths: 2 heads x 2 calls
    tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["position_ids"].size(1)
    assert trainer._metrics["train"]["num_tokens"] == [4 * tokens]


def test_lm_head_default_per_device():
    cfg = load_config(None, ["data.task=sql"])
    assert cfg.train.lm_head_for("cpu") == "label_logits"
    assert cfg.train.lm_head_for("cuda") == "fused"
    assert load_config(None, ["data.task=sql", "train.lm_head=fused"]).train.lm_head_for("cpu") == "fused"


# ---------------------------------------------------------------- threads per process

def _model_dir(tmp, hidden: int | None) -> str:
    """A config.json-only model of that width (or a reference that does not exist)."""
    import json

    if hidden is None:
        return "nowhere/no-such-model"
    ref = tmp / f"h{hidden}"
    ref.mkdir(exist_ok=True)
    (ref / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden}))
    return str(ref)


def _threads_in_child(env_extra: dict, ref: str, threads: int | None = None) -> int:
    """torch's thread count after lmtune/train/cpu_tuning.py `apply`, in a fresh interpreter (as the CLI)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra)
    over = [f"train.threads={threads}"] if threads else []
    code = ("from lmtune.config import load_config; from lmtune.train.cpu_tuning import Target, apply; "
            f"a = apply(Target(load_config(None, ['data.task=sql', *{over!r}]), {ref!r})); "
            "import torch; assert a.threads in (None, torch.get_num_threads()); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_cpu_threads_default_to_one_per_process_for_small_models_under_passive_waiting(tmp_path):
    """Two fresh interpreters (torch reads its thread settings once, at start): lmtune's own
    passive waiting gives a narrow model one thread; the user's OMP_NUM_THREADS wins over it.
    The other rules are `default_threads` itself (the test below), which `apply` hands to torch."""
    from concurrent.futures import ThreadPoolExecutor

    narrow = _model_dir(tmp_path, 256)
    cases = [({}, narrow, None, 1), ({"OMP_NUM_THREADS": "2"}, narrow, None, 2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda case: _threads_in_child(*case[:3]), cases))
    assert got == [case[3] for case in cases]


def test_default_threads_rules(tmp_path, monkeypatch):
    from lmtune.train.cpu_tuning import default_threads, model_hidden_size

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    narrow, wide = (model_hidden_size(_model_dir(tmp_path, h)) for h in (256, 1024))
    assert (narrow, wide) == (256, 1024)
    assert model_hidden_size(_model_dir(tmp_path, None)) is None
    assert default_threads(None, narrow) == 1
    assert default_threads(None, 1023) == 1 and default_threads(None, wide) is None  # wide: several threads pay
    assert default_threads(None, None) is None            # width unknown: torch's choice
    assert default_threads(3, narrow) == 3                # train.threads wins
    assert default_threads(None, narrow, gpu=True) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")       # spinning threads: torch's choice
    assert default_threads(None, narrow) is None
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")            # the user's env wins
    assert default_threads(None, narrow) is None


def test_one_process_on_a_multicore_cpu_says_how_to_use_the_other_cores(tmp_path, capsys, monkeypatch):
    import lmtune.train.distributed as dist

    cfg = load_config(None, ["data.task=sql", "train.grad_accum=8"])
    monkeypatch.setattr(dist, "usable_cores", lambda: 2)
    lt._suggest_processes(cfg, "cpu", threads=1)
    assert "--nproc 2 train.grad_accum=4" in capsys.readouterr().err
    for device, threads, extra in (("cuda", 1, []), ("cpu", 2, []), ("cpu", 1, ["train.threads=1"])):
        lt._suggest_processes(load_config(None, ["data.task=sql", *extra]), device, threads)
        assert capsys.readouterr().err == ""      # GPUs, several threads, or threads chosen: nothing
    monkeypatch.setattr(dist, "usable_cores", lambda: 1)
    lt._suggest_processes(cfg, "cpu", threads=1)
    assert capsys.readouterr().err == ""
