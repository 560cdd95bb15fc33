#!/usr/bin/env bash
# A local cluster: Redis, three stompgate nodes and nginx in front, all on 127.0.0.1.
#   examples/cluster/run.sh [start]   run in the foreground until Ctrl-C / SIGTERM
#   examples/cluster/run.sh status    is one running (same NGINX_PORT)?
#   examples/cluster/run.sh stop      stop the one started from another terminal
# Environment: NGINX_PORT (8000), NODE_PORTS ("8081 8082 8083"), REDIS_PORT (6390),
# RUN_DIR (configs and logs; default a new temporary directory), CLUSTER_READY_FILE
# (when set, a JSON description is written there once everything answers).
set -euo pipefail
abs() { case $1 in /* | "") echo "$1" ;; *) echo "$PWD/$1" ;; esac; }   # relative to the caller's cwd
RUN_DIR=$(abs "${RUN_DIR:-}")
CLUSTER_READY_FILE=$(abs "${CLUSTER_READY_FILE:-}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

NGINX_PORT=${NGINX_PORT:-8000}
NODE_PORTS=${NODE_PORTS:-"8081 8082 8083"}
REDIS_PORT=${REDIS_PORT:-6390}
read -r -a node_ports <<<"$NODE_PORTS"
state_file=${TMPDIR:-/tmp}/stompgate-cluster.$(id -u).$NGINX_PORT   # pid, run dir, node ports of a start
PY=.venv/bin/python
NGINX=$(command -v nginx || echo /usr/sbin/nginx)   # Debian's: /usr/sbin is not on a user's PATH

say() { echo "cluster: $*" >&2; }

# The pid in the state file, if that process is still a run.sh of ours.
running_pid() {
  local pid
  [ -f "$state_file" ] && read -r pid <"$state_file" || return 1
  grep -qa "run.sh" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

http_ok() { "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case ${1:-start} in
  start) ;;
  status)
    if pid=$(running_pid); then
      { read -r _; read -r dir; read -r ports; } <"$state_file"
      echo "running (pid $pid, run dir $dir): http://127.0.0.1:$NGINX_PORT/chat/"
      for p in $ports; do
        http_ok "http://127.0.0.1:$p/health" && echo "  node :$p up" || echo "  node :$p DOWN"
      done
      exit 0
    fi
    echo "not running (NGINX_PORT=$NGINX_PORT)"; exit 1 ;;
  stop)
    pid=$(running_pid) || { echo "not running (NGINX_PORT=$NGINX_PORT)"; exit 0; }
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    echo "stopped"; exit 0 ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

# ------------------------------------------------------------------ start
missing=()
[ -x .venv/bin/stompgate ] || missing+=(".venv/bin/stompgate")
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x "$NGINX" ] || missing+=(nginx)
[ -d examples/chat/public/node_modules ] || missing+=("examples/chat/public/node_modules (the chat page's npm libraries)")
if [ ${#missing[@]} -gt 0 ]; then
  say "missing: ${missing[*]}"
  say "install them with 'scripts/bootstrap.sh test' (or 'make test', which runs it first)"
  exit 1
fi
[ ${#node_ports[@]} -eq 3 ] || { say "NODE_PORTS must list three ports, got '$NODE_PORTS'"; exit 2; }
for p in "$NGINX_PORT" "${node_ports[@]}" "$REDIS_PORT"; do
  if port_busy "$p"; then say "port $p on 127.0.0.1 is already in use (set NGINX_PORT / NODE_PORTS / REDIS_PORT)"; exit 1; fi
done

RUN_DIR=${RUN_DIR:-$(mktemp -d -t stompgate-cluster.XXXXXX)}
RUN_DIR=$(mkdir -p "$RUN_DIR" && cd "$RUN_DIR" && pwd)
mkdir -p "$RUN_DIR/nginx/tmp"

# Children, in start order; stopped in reverse order (nginx, nodes, then Redis).
pids=()
names=()
cleanup() {
  local status=$? i pid n
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for n in $(seq 50) kill; do                  # up to 5 s each, then SIGKILL
      [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] || [ ! -e "/proc/$pid" ] && break
      [ "$n" = kill ] && kill -KILL "$pid" 2>/dev/null && say "${names[i]} did not stop in 5 s: killed"
      sleep 0.1
    done
  done
  wait 2>/dev/null || true
  rm -f "$state_file"
  [ -z "$CLUSTER_READY_FILE" ] || rm -f "$CLUSTER_READY_FILE"
  say "stopped; configs and logs are in $RUN_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# $1 name, then the command; output goes to $RUN_DIR/<name>.log.
spawn() {
  local name=$1; shift
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  pids+=("$!"); names+=("$name")
}

# wait_for NAME PID CHECK...: wait (20 s at most) until CHECK passes; fail if PID died.
wait_for() {
  local name=$1 pid=$2 i; shift 2
  for i in $(seq 200); do
    "$@" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during start-up; end of $RUN_DIR/$name.log:"; tail -n 20 "$RUN_DIR/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  say "$name did not answer in 20 s; see $RUN_DIR/$name.log"; exit 1
}

printf '%s\n' "$$" "$RUN_DIR" "${node_ports[*]}" >"$state_file"

spawn redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no
wait_for redis "${pids[0]}" port_busy "$REDIS_PORT"

redis_url="redis://127.0.0.1:$REDIS_PORT/0"
upstreams=""
n=0
for p in "${node_ports[@]}"; do
  n=$((n + 1))
  cat >"$RUN_DIR/node$n.yaml" <<EOF
node_id: node$n
server:
  host: 127.0.0.1
  port: $p
  websocket_paths: [/ws]
  sockjs:
    - path: /chat-websocket
      client_url: /chat/node_modules/sockjs-client/dist/sockjs.min.js
  static:
    - path: /chat
      dir: "$root/examples/chat/public"
  extensions: ["$root/examples/chat/backend.py"]
  # nginx (on this host) appends the client's address to X-Forwarded-For: believe it from
  # loopback only, so that the nodes' logs and per-address cap see the client, not nginx.
  trusted_proxies: [127.0.0.1]
auth:
  mode: dev
  cookie: chat_user
api:
  key: dev-api-key
bus:
  type: redis
  routing: directed
  redis:
    url: $redis_url
    prefix: stompgate-example
logging:
  level: info
EOF
  spawn "node$n" .venv/bin/stompgate serve --config "$RUN_DIR/node$n.yaml"
  upstreams+="        server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'
done
for n in 1 2 3; do
  wait_for "node$n" "${pids[n]}" http_ok "http://127.0.0.1:${node_ports[n - 1]}/health"
done

# Started as root, nginx would run its workers as an unprivileged user that cannot
# enter the private run directory: keep them as root (loopback-only example).
user_directive=""
[ "$(id -u)" -ne 0 ] || user_directive="user root root;"
while IFS= read -r line; do
  case $line in
    @UPSTREAM_SERVERS@) printf '%s' "$upstreams" ;;
    *) line=${line//@RUN_DIR@/$RUN_DIR}; line=${line//@NGINX_PORT@/$NGINX_PORT}
       printf '%s\n' "${line//@USER_DIRECTIVE@/$user_directive}" ;;
  esac
done <"$here/nginx.conf.template" >"$RUN_DIR/nginx.conf"
spawn nginx "$NGINX" -e "$RUN_DIR/nginx/error.log" -c "$RUN_DIR/nginx.conf" -p "$RUN_DIR/nginx"
wait_for nginx "${pids[4]}" http_ok "http://127.0.0.1:$NGINX_PORT/health"

if [ -n "$CLUSTER_READY_FILE" ]; then
  "$PY" - "$CLUSTER_READY_FILE" "$NGINX_PORT" "$REDIS_PORT" "$RUN_DIR" "${node_ports[@]}" <<'EOF'
import json, os, sys
path, nginx, redis, run_dir, *nodes = sys.argv[1:]
info = {"nginx": f"http://127.0.0.1:{nginx}", "nodes": [f"http://127.0.0.1:{p}" for p in nodes],
        "redis": f"redis://127.0.0.1:{redis}/0", "run_dir": run_dir}
with open(path + ".tmp", "w") as f:
    json.dump(info, f)
os.replace(path + ".tmp", path)  # readers never see a half-written file
EOF
fi

cat <<EOF
cluster is up (run dir $RUN_DIR):
  chat (through nginx):  http://127.0.0.1:$NGINX_PORT/chat/
  nodes:                 $(for p in "${node_ports[@]}"; do printf 'http://127.0.0.1:%s  ' "$p"; done)
  redis:                 $redis_url
Ctrl-C stops everything.
EOF

# Until a signal, or until one of the children exits (then stop the rest too).
wait -n -p gone || true
for i in "${!pids[@]}"; do [ "${pids[i]}" != "${gone:-}" ] || say "${names[i]} exited unexpectedly (see $RUN_DIR/${names[i]}.log); stopping the cluster"; done
exit 1
