#!/usr/bin/env bash
# Installs the S3-compatible test peer the extraction tests start themselves
# (moto in server mode, `moto_server -H 127.0.0.1 -p <port>`) into the test
# peers' virtual environment, and prints its path on the last line of stdout.
# Safe to run repeatedly: an up-to-date venv is left as it is.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/peer-venv.sh"

# moto 5.x: multipart uploads, abort, ListMultipartUploads, conditional put.
install_peer moto_server "moto[server]>=5.1,<6"

echo "$venv"
