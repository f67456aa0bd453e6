#!/usr/bin/env bash
# Re-check the surviving mutants of one module (a directory scripts/mutation.sh left under
# .mutation/) against the current tests. mutmut 3 keeps cached results, and a changed test
# selection can mark every mutant unchecked, so: the survivors are marked unchecked in mutmut's
# .meta files, the current tests are copied in, and only those mutants run, by name.
#
#   scripts/mutation_rerun.sh .mutation/merge          # MUTATION_JOBS=2: two mutants at a time
# A run that was stopped (or whose tests were changed meanwhile) is finished with
#   MUTATION_RERUN_UNCHECKED=1 [MUTATION_ONLY='*x_f__mutmut_*'] scripts/mutation_rerun.sh .mutation/evaluate_run
# which also runs the mutants not checked yet (only those matching MUTATION_ONLY's globs, when given).
set -euo pipefail
source "$(dirname "$0")/mutation_tools.sh"
dir=$(cd "$1" && pwd)
cd "$dir"
[ "${MUTATION_RERUN_UNCHECKED:-0}" = 1 ] && { env -u PYTHONPATH "$MUTMUT" results --all true >results.txt 2>&1 || true; }
mapfile -t names < <(grep -E ": (survived|no tests)$" results.txt | sed 's/: .*//; s/^ *//')
if [ "${MUTATION_RERUN_UNCHECKED:-0}" = 1 ]; then
  read -r -a only <<<"${MUTATION_ONLY:-*}"
  while read -r name; do
    for pat in "${only[@]}"; do
      # shellcheck disable=SC2053  # $pat is a glob on purpose
      if [[ $name == $pat ]]; then names+=("$name"); break; fi
    done
  done < <(grep -E ": not checked$" results.txt | sed 's/: .*//; s/^ *//')
fi
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
(env -u PYTHONPATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$MUTMUT" run --max-children "${MUTATION_JOBS:-1}" "${names[@]}" \
   >rerun.log 2>&1) || echo "mutmut exited $? (see $dir/rerun.log)"
env -u PYTHONPATH "$MUTMUT" results --all true >results.txt 2>&1 || true
echo "${#names[@]} rerun: $(grep -c ': killed' results.txt) killed in results.txt, still surviving:"
grep -E ": (survived|no tests)$" results.txt || true
echo "(mutants shown 'not checked' kept their earlier result: see results.before-rerun.txt)"
