#!/bin/sh
# Start a Redis pod of the sentinel overlay: as a replica of the primary the Sentinels name,
# or, when no Sentinel knows one yet (the first start of all), redis-0 as the primary and the
# others as its replicas. Every pod announces its stable DNS name, which Sentinel hands out.
set -eu
self="$(hostname).redis.${POD_NAMESPACE}.svc.cluster.local"
primary=""
for i in 0 1 2; do
    answer=$(redis-cli -h "redis-sentinel-$i.redis-sentinel.${POD_NAMESPACE}.svc.cluster.local" \
        -p 26379 --raw SENTINEL get-master-addr-by-name latentq 2>/dev/null | head -n 1) || true
    if [ -n "$answer" ]; then primary="$answer"; break; fi
done
if [ -z "$primary" ] && [ "$(hostname)" != "redis-0" ]; then
    primary="redis-0.redis.${POD_NAMESPACE}.svc.cluster.local"
fi
# Protected mode off, as the image's own entrypoint does (this script replaces it): the pods'
# network is the way in.
set -- --protected-mode no --appendonly yes --appendfsync everysec --dir /data \
    --maxmemory 3gb --maxmemory-policy noeviction --replica-announce-ip "$self"
if [ -n "$primary" ] && [ "$primary" != "$self" ]; then
    set -- "$@" --replicaof "$primary" 6379
fi
exec redis-server "$@"
