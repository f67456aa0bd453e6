"""lmtune: fine-tune language models from "should I?" to a merged, evaluated model.

The public Python API mirrors the CLI. Heavy libraries (torch, transformers, peft) are imported
inside the functions that need them so that `import lmtune` and `lmtune --help` stay fast.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP threads that spin while waiting collapse when the CPU is shared: measured here, one
# forward+backward of the embedded base on 512 tokens took 6.4 s with 2 spinning threads next to
# other jobs, 0.8 s with OMP_WAIT_POLICY=PASSIVE (and 5.3 s vs 0.22-0.27 s per row for two runs
# side by side). Passive threads pay for every wake-up instead, so on CPU lmtune runs small models on one
# thread per process by default (models.set_threads). It must be set before torch loads libgomp; a value
# the user set wins (OMP_WAIT_POLICY=ACTIVE: spin, and torch picks the thread count).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmtune.errors import UserError  # noqa: E402  (light: no heavy imports)

__all__ = ["UserError", "__version__"]
