#!/usr/bin/env bash
# Installs the independent Standard Webhooks implementation the webhook
# tests' receiver verifies signatures with (the `standardwebhooks` package
# from PyPI) into the test peers' virtual environment, and prints its path
# on the last line of stdout. Safe to run repeatedly.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/peer-venv.sh"

install_peer python "standardwebhooks==1.*"
if ! "$venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  echo "standardwebhooks does not import from $venv" >&2
  exit 1
fi

echo "$venv"
