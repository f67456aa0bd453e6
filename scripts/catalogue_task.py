"""Regenerate the bundled catalogue task (facts that change after training) from a seed.

    python scripts/catalogue_task.py                     # writes src/lmtune/assets/tasks/catalogue/
    python scripts/catalogue_task.py --out /tmp/cat      # somewhere else (e.g. to compare)

Writes docs_v1.jsonl (the catalogue at training time), docs_v2.jsonl (the current one: changed
and new products), train/validation.jsonl (questions answered from v1), test.jsonl (questions
whose answers only v2 holds) and manifest.json. The same seed gives byte-identical files;
scripts/build_tasks.py runs it too. Generator: scripts/task_gen/catalogue_gen.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ -> the `task_gen` package

from task_gen.build import DEFAULT_SEED, build_catalogue  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "lmtune" / "assets" / "tasks",
                        help="tasks directory; the files go to OUT/catalogue/ (default: the package's assets/tasks)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    args = parser.parse_args(argv)
    for rel, info in build_catalogue(args.out, args.seed).items():
        print(f"{rel:28s} {info['records']:5d} records  sha256 {info['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
