#!/usr/bin/env bash
# Installs the Python test peers the worker tests start themselves into one
# virtual environment, and prints its path on the last line of stdout:
#   - nx-27017 0.8 (a MongoDB wire-protocol server backed by SQLite)
# Safe to run repeatedly: an up-to-date venv is left as it is.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)
set -euo pipefail

venv="${FERRY_VENV:-$HOME/.cache/ferry-venv}"
python="${PYTHON:-python3}"
requirements=("nx-27017==0.8.*")

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv at $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi

# `pip install` of already satisfied requirements is a fast no-op, so the
# script stays idempotent without a marker file that could go stale.
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2; then
  echo "pip install failed for: ${requirements[*]}" >&2
  exit 1
fi

echo "$venv"
