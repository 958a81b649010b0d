#!/usr/bin/env bash
# Installs the S3-compatible test peer the extraction tests start themselves
# (moto in server mode, `moto_server -H 127.0.0.1 -p <port>`) into the test
# peers' virtual environment, and prints its path on the last line of stdout.
# Safe to run repeatedly: an up-to-date venv is left as it is.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)
set -euo pipefail

venv="${FERRY_VENV:-$HOME/.cache/ferry-venv}"
python="${PYTHON:-python3}"
# moto 5.x: multipart uploads, abort, ListMultipartUploads, conditional put.
requirements=("moto[server]>=5.1,<6")

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv at $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi

if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2; then
  echo "pip install failed for: ${requirements[*]}" >&2
  exit 1
fi
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "moto_server is missing from $venv/bin after installing ${requirements[*]}" >&2
  exit 1
fi

echo "$venv"
