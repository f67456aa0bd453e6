"""Test-wide settings: never touch the network; keep tokenizers from spawning threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Before any test module imports torch: spinning OpenMP threads collapse on a shared CPU
# (benchmarks/README.md, "CPU tuning").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The CLI gives the tiny test models one torch thread (lmtune/train/cpu_tuning.py); tests that train
# in-process get the same (importing lmtune sets nothing).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# lmtune's data cache (lmtune/data/cache.py) goes to a temporary directory for the session, never
# to the user's ~/.cache; subprocesses (the CLI) inherit the variable.
if "LMTUNE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _CACHE = tempfile.mkdtemp(prefix="lmtune-test-cache-")
    os.environ["LMTUNE_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)


def pytest_collection_finish(session):
    # long, independent subprocess launches start now, on the core the in-process tests leave idle
    # (tests/helpers/early_launch.py); only those a selected test needs
    if session.config.option.collectonly:
        return
    import early_launch

    early_launch.start_registered(session.items)
