#!/usr/bin/env bash
# Install what stompgate needs on a fresh Debian machine with Python 3.11.
#   scripts/bootstrap.sh run    the virtualenv with stompgate
#   scripts/bootstrap.sh test   also the test tools: pytest & co, Node.js + npm packages, redis-server
# Steps already done are skipped, so running it again is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
PY=${PYTHON:-python3}

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi

stamp=.venv/.installed-$what
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$what" = test ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi

if [ "$what" = test ]; then
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  # The cluster tests start their own redis-server processes (and redis-cli --cluster create).
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
  if [ ! -f tests/js/node_modules/.installed ] || [ tests/js/package.json -nt tests/js/node_modules/.installed ]; then
    (cd tests/js && npm install --no-audit --no-fund --loglevel=error)
    touch tests/js/node_modules/.installed
  fi
fi
