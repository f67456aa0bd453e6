"""Preference pairs for the bundled SQL task, for configs/tiny-sql-dpo.yaml (docs/preference.md):

    python scripts/sql_pairs.py --out runs/tiny-sql-pairs.jsonl [--n 400] [--seed 0] [--cut]

Each pair is a training question's prompt (as SFT renders alpaca records: instruction, a blank
line, the schema), its gold SQL as `chosen`, and as `rejected` the gold SQL with one typical
mistake (a changed number, a flipped comparison, an aggregate swapped, a condition dropped) that
the bundled database answers differently: the task's own checker decides. A stand-in until
`lmtune pairs` samples the rejected answers from the run itself.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lmtune.rl.pairs import rejected_fields  # noqa: E402
from lmtune.tasks import task_files  # noqa: E402
from lmtune.tasks.sql import ReadOnlyDB, results_match  # noqa: E402

SWAPS = [("SUM(", "AVG("), ("COUNT(*)", "COUNT(DISTINCT o.year)"), (" > ", " < "), (" < ", " > "),
         ("ORDER BY age", "ORDER BY age DESC"), ("MAX(", "MIN("), ("SELECT DISTINCT", "SELECT")]


def mistakes(sql: str, rng: random.Random) -> list[str]:
    """Wrong variants of `sql`, in a random order."""
    out = [sql.replace(a, b, 1) for a, b in SWAPS if a in sql]
    out += [sql[:m.start()] + str(int(m.group()) + rng.choice([-1, 1, 2])) + sql[m.end():]
            for m in re.finditer(r"\b\d+\b", sql)]
    if " AND " in sql:   # drop the last condition
        out.append(sql[:sql.rindex(" AND ")])
    rng.shuffle(out)
    return [s for s in out if s != sql]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=400, help="pairs to write (at most one per question)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cut", action="store_true", help="end each rejected answer at its first wrong word")
    args = ap.parse_args()
    files = task_files("sql")
    rows = [json.loads(line) for line in files["train"].read_text().splitlines() if line.strip()]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    pairs = []
    with ReadOnlyDB(files["db"]) as db:
        for r in rows:
            gold = db.run(r["output"])
            ordered = "ORDER BY" in r["output"].upper()
            wrong = next((s for s in mistakes(r["output"], rng)
                          if (got := db.run(s)) is not None and not results_match(got, gold, ordered)), None)
            if gold is None or wrong is None:
                continue
            prompt = f"{r['instruction']}\n\n{r['input']}" if r.get("input", "").strip() else r["instruction"]
            pairs.append({"prompt": prompt, "chosen": r["output"], **rejected_fields(r["output"], wrong, args.cut)})
            if len(pairs) == args.n:
                break
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        print(f"error: {out} exists; pass another --out", file=sys.stderr)
        return 2
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    print(f"wrote {len(pairs)} pairs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
