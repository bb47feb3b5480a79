#!/usr/bin/env bash
# `make run`: a private Redis, one worker and the API, in the foreground. Ctrl-C stops all.
#
#   PORT              API port (default 8000)
#   HOST              API address (default 127.0.0.1)
#   LATENTQ_REDIS_URL use this Redis instead of starting one
#   LATENTQ_*         every other setting (README.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=$root/.venv/bin
var=${LATENTQ_DATA_DIR:-$root/var}
port=${PORT:-8000}
host=${HOST:-127.0.0.1}
mkdir -p "$var/log" "$var/redis"

pids=()
stop() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    echo "stopping…"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

# Each process writes to var/log/<name>.log and to this terminal, its lines prefixed.
start() {
  local name=$1; shift
  "$@" > >(tee -a "$var/log/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

if [[ -z ${LATENTQ_REDIS_URL:-} ]]; then
  socket=$var/redis/redis.sock
  start redis redis-server "$root/deploy/local/redis.conf" --dir "$var/redis" --unixsocket "$socket"
  export LATENTQ_REDIS_URL="unix://$socket"
  for _ in $(seq 100); do
    redis-cli -s "$socket" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -s "$socket" ping >/dev/null || { echo "redis-server did not start; see $var/log/redis.log"; exit 1; }
fi
export LATENTQ_DATA_DIR=$var
export LATENTQ_LOG_FORMAT=${LATENTQ_LOG_FORMAT:-text}

# Without API keys the service is open: it listens on loopback only.
if [[ -z ${LATENTQ_API_KEYS:-} && ${LATENTQ_ALLOW_OPEN:-false} != true ]]; then
  case $host in
    127.*|localhost|::1) ;;
    *) echo "no LATENTQ_API_KEYS: listening on 127.0.0.1, not $host (python -m app.keys new NAME)"
       host=127.0.0.1 ;;
  esac
fi

# The worker's metrics port: 9100 when free, else any free one (another service, or another
# `make run`, may hold 9100).
if [[ -z ${LATENTQ_METRICS_PORT:-} ]]; then
  LATENTQ_METRICS_PORT=$("$bin/python" -c '
import socket
for port in (9100, 0):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
')
  export LATENTQ_METRICS_PORT
fi

start worker "$bin/python" -m worker
# No proxy in front: no --proxy-headers, so no client can name its own address.
start api "$bin/uvicorn" --factory app.main:create_app --host "$host" --port "$port" \
  --timeout-graceful-shutdown 20

echo "latentq: http://$host:$port   (API docs: /docs, models: /v1/models)"
echo "worker metrics: http://127.0.0.1:$LATENTQ_METRICS_PORT/metrics"
shown_redis=$(sed -E 's#(://[^:/@]*:)[^/]*@#\1***@#' <<<"$LATENTQ_REDIS_URL")  # no password on screen
echo "logs: $var/log/{redis,worker,api}.log   redis: $shown_redis   Ctrl-C stops everything"
# Stop everything as soon as any one process exits.
wait -n "${pids[@]}"
echo "a process exited; see $var/log/"
exit 1
