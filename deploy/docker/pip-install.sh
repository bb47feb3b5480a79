#!/bin/sh
# `pip install "$@"` inside an image build (the Dockerfile mounts deploy/docker at /build):
#
# - wheels in deploy/docker/wheels/ are found first (--find-links), so a wheelhouse made with
#   `pip download -d deploy/docker/wheels ...` serves what it holds without the network;
# - WHEELS_ONLY=1 (a build argument) installs from the wheelhouse alone (--no-index);
# - PIP_INDEX_URL (a build argument) is a mirror or proxy of the package index;
# - a CA bundle passed as the BuildKit secret `ca` is trusted, for a proxy that re-signs TLS.
#   BuildKit mounts it at /run/secrets/ca for this one command; no layer keeps it.
set -eu

if [ -s /run/secrets/ca ]; then
    export PIP_CERT=/run/secrets/ca
fi
# Build arguments arrive as empty strings when not given; pip would read those as values.
if [ -z "${PIP_INDEX_URL:-}" ]; then
    unset PIP_INDEX_URL
fi
if [ -n "${WHEELS_ONLY:-}" ]; then
    set -- --no-index "$@"
fi
unset WHEELS_ONLY

exec pip install --no-cache-dir --find-links /build/wheels "$@"
