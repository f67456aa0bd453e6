#!/usr/bin/env bash
# Builds one virtual environment per peer tool under benchmarks/peers/.venvs/<peer> (git-ignored),
# from the pinned list benchmarks/peers/<peer>.txt. The first run downloads every wheel into
# benchmarks/peers/.wheels/<peer> and installs from there; later runs (and a rebuild after
# `rm -rf .venvs`) install from that folder with --no-index, so they need no network.
#
#   bash benchmarks/peers/setup.sh                 # every peer listed below
#   bash benchmarks/peers/setup.sh llamafactory    # one peer
#
# torch 2.13.0 must come from a CPU wheel (pip's find-links on this machine has one); an unpinned
# torch would pull a multi-GB CUDA build.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(llamafactory)

for peer in "${PEERS[@]}"; do
  req="$HERE/$peer.txt"
  venv="$HERE/.venvs/$peer"
  wheels="$HERE/.wheels/$peer"
  [ -f "$req" ] || { echo "no pinned list $req" >&2; exit 2; }
  if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ] && cmp -s "$req" "$venv/.complete"; then
    echo "$peer: $venv is up to date"; continue
  fi
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  if [ ! -f "$wheels/.complete" ] || ! cmp -s "$req" "$wheels/.complete"; then
    mkdir -p "$wheels"
    "$venv/bin/pip" download --quiet --no-deps -d "$wheels" -r "$req"
    cp "$req" "$wheels/.complete"
  fi
  # the list is complete (every dependency pinned), so no resolver and no index
  "$venv/bin/pip" install --quiet --no-deps --no-index --find-links "$wheels" -r "$req"
  if [ "$peer" = llamafactory ]; then
    # see llamafactory.txt: no torchaudio build exists for torch 2.13; text training never calls it
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$site/torchaudio"
    cat > "$site/torchaudio/__init__.py" <<'PY'
"""Stub written by lmtune's benchmarks/peers/setup.sh: PyPI has no torchaudio for torch 2.13, and
LLaMA-Factory imports it at module level only for audio inputs, which the benchmark never uses."""
def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is a stub in this benchmark environment")
PY
  fi
  "$venv/bin/pip" freeze > "$venv/freeze.txt"
  cp "$req" "$venv/.complete"
  echo "$peer: installed into $venv ($(wc -l < "$venv/freeze.txt") packages, see freeze.txt)"
done
