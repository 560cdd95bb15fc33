#!/usr/bin/env bash
# Install what stompgate needs on a fresh Debian machine with Python 3.11.
#   scripts/bootstrap.sh run    the virtualenv with stompgate, Node.js + the npm packages of the chat example
#                               and of the admin page (its chart library)
#   scripts/bootstrap.sh test   also the test tools: pytest & co, npm packages, redis-server, chromium, nginx,
#                               and the benchmark's load generator and peers
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
    .venv/bin/python -m pip install -q -e '.[test,bench]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi

npm_install() {  # npm packages of a folder, again only when its package.json changed
  if [ ! -f "$1/node_modules/.installed" ] || [ "$1/package.json" -nt "$1/node_modules/.installed" ]; then
    (cd "$1" && npm install --no-audit --no-fund --loglevel=error)
    touch "$1/node_modules/.installed"
  fi
}

# The chat example's page libraries (sockjs-client, stompjs, ...) come from npm.
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
npm_install examples/chat/public
npm_install examples/greeting/public
# The admin page's chart library (uPlot), served by the node itself, never from a CDN.
npm_install stompgate/admin/static

if [ "$what" = test ]; then
  # The cluster tests start their own redis-server processes (and redis-cli --cluster create).
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
  # The browser tests: Chromium driven by playwright-core; nginx for the cluster example.
  command -v chromium >/dev/null || apt_install chromium
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
  # examples/nginx's STOMP-over-TLS listener (tests/node/test_nginx_example.py) is a stream block.
  [ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || apt_install libnginx-mod-stream
  npm_install tests/js
  npm_install bench/loadgen   # the benchmark's load generator (its smoke run is a test)
fi
