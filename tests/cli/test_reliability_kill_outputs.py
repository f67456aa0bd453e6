"""kill -9 during `lmtune merge` and `lmtune eval` (scripts/kill_outputs.py, forked launches so the
imports happen once): what a kill leaves is absent or whole, never half-written output that looks
complete, and the next launch succeeds. The script's own docstring says what each check means."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_kill_during_merge_and_eval_leaves_nothing_that_looks_complete(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import kill_outputs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    result = kill_outputs.kill_outputs(kills=1, seed=1, work=tmp_path, launcher_kind="fork")
    assert result["problems"] == [] and result["ok"], json.dumps(result, indent=1)
    # kill 0 waits for the write phase (the first file written), so it lands while files are written
    assert result["kills_landed"]["merge"] >= 1 and result["kills_landed"]["eval"] >= 1
    assert set(result["states"]["eval"]) <= {"absent", "short", "long"}
