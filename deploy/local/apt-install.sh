#!/usr/bin/env bash
# Install Debian packages, as root or through sudo, refreshing the package lists only when
# the first try finds nothing to install (a fresh machine or container has no lists).
set -euo pipefail
if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$@"; then
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "$@"
fi
