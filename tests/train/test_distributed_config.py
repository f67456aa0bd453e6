"""Distributed settings without starting processes: launch commands, engine checks (FSDP on CPU,
DeepSpeed missing), the shipped accelerate/DeepSpeed configs, and the mapping onto SFTConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmtune import cli
from lmtune.train import distributed
from lmtune.config import load_config
from lmtune.errors import ConfigError, UserError

PRESETS = distributed.PRESETS
ACCELERATE_YAMLS = sorted((PRESETS / "accelerate").glob("*.yaml"))


def _cfg(*overrides):
    return load_config(None, ["data.train=x.jsonl", *overrides])


@pytest.fixture
def launched(monkeypatch):
    """Pretend to be rank 1 of 2 started by torchrun (env only; no process group is joined)."""
    for key, value in {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "GROUP_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_torchrun_args_one_machine_and_several():
    one = distributed.torchrun_args(_cfg("distributed.nproc=2"), ["c.yaml", "--resume"])
    assert one == ["--nproc_per_node=2", "--nnodes=1", "--standalone", "--module", "lmtune", "train",
                   "c.yaml", "--resume"]
    two = distributed.torchrun_args(_cfg("distributed.nproc=8", "distributed.nnodes=2", "distributed.node_rank=1",
                                         "distributed.master_addr=10.0.0.1", "distributed.master_port=29600"),
                                    ["c.yaml"])
    assert two[:5] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                       "--master_port=29600"]
    # torch's own parser accepts them (the same one `torchrun` uses)
    from torch.distributed.run import parse_args

    parsed = parse_args(two)
    assert (parsed.nproc_per_node, parsed.nnodes, parsed.node_rank, parsed.module) == ("8", "2", 1, True)
    assert parsed.training_script == "lmtune" and parsed.training_script_args == ["train", "c.yaml"]


def test_cli_flags_become_config_keys():
    from lmtune.commands.train import _overrides

    parser = cli.build_parser()
    args = parser.parse_args(["train", "c.yaml", "lora.r=8", "--nproc", "4", "--nnodes", "2", "--node-rank", "1",
                              "--master-addr", "h0", "--master-port", "29700"])
    assert _overrides(args) == ["lora.r=8", "distributed.nproc=4", "distributed.nnodes=2",
                                "distributed.node_rank=1", "distributed.master_addr=h0",
                                "distributed.master_port=29700"]
    cfg = load_config(None, ["data.train=x.jsonl", *_overrides(args)])
    assert distributed.needs_launch(cfg)
    assert not distributed.needs_launch(_cfg())  # one process: no launcher


def test_backend_resolution(launched):
    assert distributed.resolve_backend("none", 2) == "ddp"
    assert distributed.resolve_backend("none", 1) == "none"
    launched.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --config_file fsdp.yaml
    assert distributed.resolve_backend("none", 2) == "fsdp"
    with pytest.raises(ConfigError, match="accelerate config you launched with selects 'fsdp'"):
        distributed.resolve_backend("ddp", 2)


def test_fsdp_on_cpu_is_refused_with_exit_2(tmp_path, capsys):
    rc = cli.main(["train", str(_yaml(tmp_path)), "distributed.backend=fsdp", "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "silently run it as DDP" in err and "distributed.backend=ddp" in err
    assert "Traceback" not in err


def test_deepspeed_missing_is_exit_2_with_install_hint(tmp_path, capsys):
    rc = cli.main(["train", str(_yaml(tmp_path)), "distributed.backend=deepspeed", "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "deepspeed is not installed" in err and "pip install deepspeed" in err


def test_node_rank_must_be_below_nnodes():
    with pytest.raises(UserError) as err:
        distributed.check_launch(_cfg("distributed.nproc=2", "distributed.nnodes=2", "distributed.node_rank=2"))
    assert "distributed.node_rank: got 2, must be < distributed.nnodes (2)" in err.value.problems


def test_python_api_refuses_several_processes_without_launcher():
    with pytest.raises(UserError, match="needs a launcher"):
        distributed.start(_cfg("distributed.nproc=2"), "cpu")


def _yaml(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": [str(tmp_path / "x.jsonl")]},
                                    "output": {"dir": str(tmp_path / "run")}}))
    return path


# ---------------------------------------------------------------- shipped configs

@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_shipped_deepspeed_configs_are_sane(name):
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    path = distributed.deepspeed_config_path(name)
    assert distributed.deepspeed_config_problems(path, batch_size=4, grad_accum=4) == []
    ds = HfDeepSpeedConfig(str(path))  # accelerate's reader (works without deepspeed installed)
    assert ds.is_zero3() == (name == "zero3") and ds.is_zero2() == (name == "zero2")
    assert not ds.is_offload()
    raw = json.loads(path.read_text())
    # every batch/precision field is left to the Trainer, so lmtune's train.* settings rule
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
                "train_batch_size"):
        assert raw[key] == "auto", key
    assert raw["bf16"]["enabled"] == raw["fp16"]["enabled"] == "auto"
    if name == "zero3":  # the final save must gather full weights, or adapter/model would be empty
        assert raw["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert distributed.deepspeed_config_path(None) == distributed.deepspeed_config_path("zero2")


def test_deepspeed_config_problems_name_the_key(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 5}, "train_micro_batch_size_per_gpu": 8}))
    problems = distributed.deepspeed_config_problems(bad, batch_size=4, grad_accum=1)
    assert any("zero_optimization.stage is 5" in p for p in problems)
    assert any("train_micro_batch_size_per_gpu is 8 but train.batch_size is 4" in p for p in problems)
    assert "not found" in distributed.deepspeed_config_problems(tmp_path / "no.json", 4, 1)[0]
    (tmp_path / "broken.json").write_text("{")
    assert "not valid JSON" in distributed.deepspeed_config_problems(tmp_path / "broken.json", 4, 1)[0]


@pytest.mark.parametrize("path", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_shipped_accelerate_configs_load_and_use_known_options(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    first = path.read_text().splitlines()[0]
    assert first.startswith("# accelerate launch --config_file src/lmtune/presets/accelerate/" + path.name)
    assert "-m lmtune train" in first
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown top-level keys
    known = {a.dest for a in launch_command_parser()._actions}
    nested = {**config.fsdp_config, **config.deepspeed_config}
    unknown = sorted(k for k in nested if k not in known)
    assert unknown == [], f"{path.name}: accelerate launch does not know {unknown}"
    assert config.mixed_precision == "no"  # lmtune's train.precision decides
    kind = config.distributed_type.value
    assert kind in ("MULTI_GPU", "FSDP", "DEEPSPEED")
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])


def test_shipped_set_is_complete():
    names = {p.name for p in ACCELERATE_YAMLS}
    assert {"ddp.yaml", "multinode_ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"} <= names


# ---------------------------------------------------------------- mapping onto SFTConfig

def test_one_process_adds_nothing():
    assert distributed.trainer_arguments(_cfg(), "cpu") == {}


def test_ddp_on_cpu_maps_to_gloo(launched):
    cfg = _cfg("distributed.backend=ddp")
    kwargs = distributed.trainer_arguments(cfg, "cpu")
    assert kwargs["ddp_backend"] == "gloo" and kwargs["ddp_find_unused_parameters"] is False
    assert "fsdp" not in kwargs and "deepspeed" not in kwargs


def test_fsdp_and_deepspeed_mapping_is_accepted(launched):
    fsdp = distributed.trainer_arguments(_cfg("distributed.backend=fsdp"), "cuda")
    ds = distributed.trainer_arguments(_cfg("distributed.backend=deepspeed",
                                            "distributed.deepspeed_config=zero3"), "cuda")
    assert ds["deepspeed"].endswith("presets/deepspeed/zero3.json")
    assert distributed.shards_weights(_cfg("distributed.backend=fsdp"))
    assert distributed.shards_weights(_cfg("distributed.backend=deepspeed", "distributed.deepspeed_config=zero3"))
    assert not distributed.shards_weights(_cfg("distributed.backend=deepspeed"))  # zero2 keeps whole weights
    launched.setenv("ACCELERATE_USE_FSDP", "true")  # the accelerate config then decides, lmtune adds nothing
    assert "fsdp" not in distributed.trainer_arguments(_cfg("distributed.backend=fsdp"), "cuda")
    launched.undo()  # construct outside the fake launch: SFTConfig would try to join a process group
    from trl import SFTConfig

    args = SFTConfig(output_dir="unused", use_cpu=True, bf16=False, **fsdp)
    plugin = args.fsdp_plugin_args  # what the Trainer hands to accelerate's FSDP plugin
    assert plugin["fsdp_version"] == 2 and plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT" and plugin["reshard_after_forward"] is True
