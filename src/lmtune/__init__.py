"""lmtune: fine-tune language models from "should I?" to a merged, evaluated model.

The public Python API mirrors the CLI. Heavy libraries (torch, transformers, peft) are imported
inside the functions that need them so that `import lmtune` and `lmtune --help` stay fast.
"""

__version__ = "0.1.0"

# Importing lmtune changes nothing in the process (no environment variables, no threads): the CLI
# applies its CPU tuning itself (lmtune/train/cpu_tuning.py).
from lmtune.errors import UserError  # light: no heavy imports

__all__ = ["UserError", "__version__"]
