#!/usr/bin/env bash
# Re-check the surviving mutants of one module (a directory scripts/mutation.sh left under
# .mutation/) against the current tests. mutmut 3 keeps cached results, and a changed test
# selection can mark every mutant unchecked, so: the survivors are marked unchecked in mutmut's
# .meta files, the current tests are copied in, and only those mutants run, by name.
#
#   scripts/mutation_rerun.sh .mutation/merge
#   MUTATION_RERUN_UNCHECKED=1 scripts/mutation_rerun.sh .mutation/merge   # also finish a run that was stopped
set -euo pipefail
source "$(dirname "$0")/mutation_tools.sh"
dir=$(cd "$1" && pwd)
cd "$dir"
pattern=": (survived|no tests)$"
if [ "${MUTATION_RERUN_UNCHECKED:-0}" = 1 ]; then
  env -u PYTHONPATH "$MUTMUT" results --all true >results.txt 2>&1 || true
  pattern=": (survived|no tests|not checked)$"
fi
mapfile -t names < <(grep -E "$pattern" results.txt | sed 's/: .*//; s/^ *//')
[ ${#names[@]} -gt 0 ] || { echo "no survivors in $dir/results.txt"; exit 0; }
"$PYTHON" - "${names[@]}" <<'PY'
import glob, json, sys
names = set(sys.argv[1:])
for meta in glob.glob("mutants/**/*.meta", recursive=True):
    with open(meta, encoding="utf-8") as fh:
        data = json.load(fh)
    for key in data["exit_code_by_key"]:
        if key in names:
            data["exit_code_by_key"][key] = None
    with open(meta, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
PY
cp results.txt "results.before-rerun.txt"
rm -rf mutants/tests tests
cp -a "$ROOT/tests" mutants/tests
cp -a "$ROOT/tests" tests
(env -u PYTHONPATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$MUTMUT" run --max-children 1 "${names[@]}" \
   >rerun.log 2>&1) || echo "mutmut exited $? (see $dir/rerun.log)"
env -u PYTHONPATH "$MUTMUT" results --all true >results.txt 2>&1 || true
echo "${#names[@]} rerun: $(grep -c ': killed' results.txt) killed in results.txt, still surviving:"
grep -E ": (survived|no tests)$" results.txt || true
echo "(mutants shown 'not checked' kept their earlier result: see results.before-rerun.txt)"
