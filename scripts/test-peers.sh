#!/usr/bin/env bash
# Installs the Python test peers the worker tests start themselves into one
# virtual environment, and prints its path on the last line of stdout:
#   - nx-27017 0.8 (a MongoDB wire-protocol server backed by SQLite)
# Safe to run repeatedly: an up-to-date venv is left as it is.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/peer-venv.sh"

install_peer nx-27017 "nx-27017==0.8.*"

echo "$venv"
