#!/usr/bin/env bash
# The container checks (`make e2e`): build the project image (cached after the first time), then run tests/e2e
# (pytest marker `containers`): the image itself, the whole tiny DAG with every step in a container, and the
# chart's server pod under `podman kube play`. Without a container engine the tests are skipped, saying so.
#
# BASE_IMAGE: the image to build on. Unset: python:3.11.7-slim-bookworm when the engine can pull it, else the
# local Debian base (scripts/build-base-image.sh, built once).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python

if source scripts/container-engine.sh 2>/dev/null; then
  if [ -z "${BASE_IMAGE:-}" ]; then
    if timeout 60 "$ENGINE" pull --quiet python:3.11.7-slim-bookworm >/dev/null 2>&1; then
      BASE_IMAGE=python:3.11.7-slim-bookworm
    else
      echo "no registry answers: building on the local Debian base"
      BASE_IMAGE=aimass-base:bookworm scripts/build-base-image.sh
      BASE_IMAGE=aimass-base:bookworm
    fi
  fi
  BASE_IMAGE=$BASE_IMAGE scripts/build-image.sh
else
  echo "no container engine here: the container checks will be skipped"
fi
"$PYTHON" -m pytest -m containers tests/e2e "$@"
