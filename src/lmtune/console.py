"""What reaches the console, decided in one place: by default no third-party warnings, library log
lines or library progress bars (bitsandbytes' "Failed to load CPU gemm_4bit_forward ... pip install
kernels", transformers' FutureWarnings and "Token indices sequence length is longer than ...",
datasets' "Map" bars, "Writing model shards"); lmtune's own notes, its progress bars and errors
remain. `--verbose` or `--debug` leaves every library as it is.

Called by the CLI before any command imports torch: warnings raised while a library is imported
are filtered too, and the environment variables reach launched worker processes."""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Libraries whose loggers are set to ERROR (transformers has its own verbosity API, below).
LIBRARY_LOGGERS = ("bitsandbytes", "peft", "trl", "accelerate", "datasets", "huggingface_hub", "torch",
                   "torch.distributed", "urllib3", "filelock", "httpx")
# Read by the libraries when they are first imported (and inherited by torchrun's workers).
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "LMTUNE_QUIET": "1"}


def configure(verbose: bool = False) -> None:
    """Quiet the libraries (default) or leave them be (verbose). Idempotent."""
    if verbose:
        if os.environ.get("LMTUNE_QUIET") == "1":  # quieted earlier in this process: undo it
            for key in QUIET_ENV:
                os.environ.pop(key, None)
            warnings.resetwarnings()
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).setLevel(logging.NOTSET)
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # lmtune itself says what it has to say with print(); every warning comes from a library.
    warnings.simplefilter("ignore")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_imported_libraries()


def quiet_imported_libraries() -> None:
    """Libraries already imported (in-process callers, tests) read no environment again."""
    if os.environ.get("LMTUNE_QUIET") != "1":
        return
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
