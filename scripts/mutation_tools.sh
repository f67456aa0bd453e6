# Sourced by scripts/mutation.sh and scripts/mutation_rerun.sh: the repo root, and the Python and
# mutmut they run (the repo's .venv unless PYTHON / MUTMUT say otherwise).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
MUTMUT=${MUTMUT:-$(dirname "$PYTHON")/mutmut}
[ -x "$MUTMUT" ] || MUTMUT=mutmut
