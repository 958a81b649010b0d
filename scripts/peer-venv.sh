# The test peers' virtual environment, sourced by the scripts that install
# a peer into it (scripts/test-peers.sh, scripts/s3-peer.sh).
#
# `install_peer PROGRAM REQUIREMENT...` creates the venv when it is missing,
# pip-installs the requirements into it and checks that they brought
# `$venv/bin/PROGRAM`; it exits with a message on stderr when either fails.
# `pip install` of requirements already satisfied is a fast no-op, so the
# scripts stay idempotent without a marker file that could go stale.
#   FERRY_VENV   where the venv lives (default: $HOME/.cache/ferry-venv)
#   PYTHON       the interpreter that creates it (default: python3)

venv="${FERRY_VENV:-$HOME/.cache/ferry-venv}"

install_peer() {
  local program="$1"
  shift
  local python="${PYTHON:-python3}"

  if [ ! -x "$venv/bin/python" ]; then
    echo "creating venv at $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
  fi

  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2; then
    echo "pip install failed for: $*" >&2
    exit 1
  fi
  if [ ! -x "$venv/bin/$program" ]; then
    echo "$program is missing from $venv/bin after installing $*" >&2
    exit 1
  fi
}
