#!/bin/sh
# Start a Sentinel of the sentinel overlay. Sentinel rewrites its configuration file as it
# learns (replicas, other Sentinels, failovers): it lives on the pod's volume, written here
# only on the first start.
set -eu
config=/data/sentinel.conf
if [ ! -s "$config" ]; then
    cat > "$config" <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $(hostname).redis-sentinel.${POD_NAMESPACE}.svc.cluster.local
sentinel monitor latentq redis-0.redis.${POD_NAMESPACE}.svc.cluster.local 6379 2
sentinel down-after-milliseconds latentq 5000
sentinel failover-timeout latentq 60000
sentinel parallel-syncs latentq 1
CONF
fi
exec redis-server "$config" --sentinel
