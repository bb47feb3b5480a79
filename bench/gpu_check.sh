#!/bin/sh
# The GPU check, offline, from the repository root: $PYTHON, else the project's venv, else python3.
cd "$(dirname "$0")/.." && HF_HUB_OFFLINE=1 exec "${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}" -m bench.gpu_check "$@"
