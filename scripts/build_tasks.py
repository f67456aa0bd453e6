"""Regenerate the bundled tasks (text-to-SQL, JSON extraction, general probe) from a seed.

    python scripts/build_tasks.py                      # writes src/lmtune/assets/tasks/
    python scripts/build_tasks.py --out /tmp/tasks     # somewhere else (e.g. to compare)

The same seed gives byte-identical files; commit the result after changing a generator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ -> the `task_gen` package

from task_gen.build import DEFAULT_SEED, build_all  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "lmtune" / "assets" / "tasks",
                        help="output directory (default: the package's assets/tasks)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    args = parser.parse_args(argv)
    manifest = build_all(args.out, args.seed)
    for rel, info in manifest["files"].items():
        print(f"{rel:28s} {info['records']:5d} records  sha256 {info['sha256'][:12]}")
    print(f"sql/db.sqlite                rows {json.dumps(manifest['sql_db_rows'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
