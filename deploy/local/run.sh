#!/usr/bin/env bash
# `make run`: a private Redis, the workers and the API, in the foreground, each started
# again when it dies (deploy/local/supervise.py). Ctrl-C stops all.
#
#   PORT              API port (default 8000)
#   HOST              API address (default 127.0.0.1)
#   WORKERS           how many workers (default 1): one per CUDA device when there are
#                     as many, else each with its share of the CPU cores
#   LATENTQ_REDIS_URL use this Redis instead of starting one
#   LATENTQ_*         every other setting (README.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
var=${LATENTQ_DATA_DIR:-$root/var}
port=${PORT:-8000}
host=${HOST:-127.0.0.1}
workers=${WORKERS:-1}
mkdir -p "$var/log"

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

exec "$root/.venv/bin/python" "$root/deploy/local/supervise.py" \
  --var "$var" --host "$host" --port "$port" --workers "$workers"
