#!/bin/sh
# Like the official redis image: a redis-server started with flags only (no config file)
# listens on every interface of the container without protected mode, since the stack's own
# network is the only way in.
set -e
if [ "${1:-}" = "redis-server" ] && [ "${2:-}" = "${2#/}" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
