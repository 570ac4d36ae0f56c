#!/usr/bin/env bash
# Builds istiolite's wheel and the wheels of everything it needs at run time, at the locked
# versions, into OUT_DIR. The image's build stage runs it; so does CI (tests/unit/deploy), in a
# clean venv, since no container engine runs there.
#   docker/build-wheels.sh OUT_DIR [BUILD_VENV]
set -euo pipefail

out=${1:?usage: build-wheels.sh OUT_DIR [BUILD_VENV]}
venv=${2:-/tmp/istiolite-build-venv}
cd "$(dirname "$0")/.."

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir --upgrade pip
# protoc for protos/ (the Istio CA API): the generated modules ship inside the wheel.
"$venv/bin/pip" install --quiet --no-cache-dir -c requirements.lock grpcio-tools
"$venv/bin/python" protos/build.py
"$venv/bin/pip" wheel --quiet --no-cache-dir -c requirements.lock --wheel-dir "$out" .
