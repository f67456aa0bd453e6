"""Test helper: `python tests/helpers/rank_dump.py DUMP_DIR train CONFIG ...` runs `lmtune train` (its
launcher included) with every rank saving, at the end of training, its trainable tensors
(rank<N>.safetensors) and a note (rank<N>.json: rank, world size, whether it tokenized the data,
pid, engine, sharded or not) into DUMP_DIR. The launcher starts this module in each worker instead
of `lmtune`, so none of it lives in lmtune. Used by tests/train/test_distributed_ddp.py and
benchmarks/gpu_fsdp_smoke.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def install(out: Path) -> None:
    import lmtune.data
    import lmtune.train.recipe as lt
    from lmtune.train import distributed

    built = {"data": False}
    prepare, finish, torchrun_args = lmtune.data.prepare_datasets, lt._finish_on_main, distributed.torchrun_args

    def counting_prepare(*args, **kwargs):
        built["data"] = True
        return prepare(*args, **kwargs)

    def dumping_finish(cfg, run, setup, trainer, *rest):
        dump(trainer.model, cfg, out, built["data"])   # every rank: FSDP gathers (a collective)
        return finish(cfg, run, setup, trainer, *rest)

    def worker_args(cfg, child_argv):                  # workers run this module, not lmtune
        args = torchrun_args(cfg, child_argv)
        at = args.index("--module")
        return [*args[:at], "--module", "rank_dump", str(out), *args[at + 2:]]

    lmtune.data.prepare_datasets, lt._finish_on_main = counting_prepare, dumping_finish
    distributed.torchrun_args = worker_args
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))


def dump(model, cfg, out: Path, built_data: bool) -> None:
    from safetensors.torch import save_file
    from torch.distributed.tensor import DTensor

    from lmtune.train.distributed import rank, world_size

    tensors, sharded = {}, False
    for name, p in model.named_parameters():
        sharded = sharded or isinstance(p, DTensor)
        if p.requires_grad:   # FSDP2 holds DTensor shards: gather the full tensor (a collective)
            full = p.full_tensor() if isinstance(p, DTensor) else p
            tensors[name] = full.detach().cpu().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / f"rank{rank()}.safetensors"))
    (out / f"rank{rank()}.json").write_text(json.dumps(
        {"rank": rank(), "world_size": world_size(), "built_data": built_data, "pid": os.getpid(),
         "backend": cfg.distributed.backend, "sharded": sharded}))


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    from lmtune.cli import main

    sys.exit(main(sys.argv[2:]))
