#!/usr/bin/env bash
# Build the project image (Dockerfile) with Docker or podman, tagged as the pipeline and the chart expect it.
#
#   scripts/build-image.sh                                  # CPU torch on python:3.11 from a registry
#   BASE_IMAGE=aimass-base:bookworm scripts/build-image.sh  # on the local Debian base (scripts/build-base-image.sh)
#   TORCH_VARIANT=cu130 scripts/build-image.sh              # CUDA torch under the same tag
#
# Where the host's pip reaches its index only through a CA bundle of its own (pip's `cert`) or takes wheels from a
# local folder (pip's `find-links`, such as a CPU torch wheel), podman gets both mounted read-only into the build and
# pip inside is pointed at them; nothing of them lands in a layer. Docker builds cannot mount folders: there pip
# uses its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/container-engine.sh

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
IMAGE=${IMAGE:-$(PYTHONPATH=. "$PYTHON" -c 'from aimass.config import PROJECT_IMAGE; print(PROJECT_IMAGE)')}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
BASE_IMAGE=${BASE_IMAGE:-python:3.11.7-slim-bookworm}

pip_setting() {  # the host pip's value for a setting (environment first, then its configuration files)
  local env_name="PIP_${1^^}"; env_name=${env_name//-/_}
  if [ -n "${!env_name:-}" ]; then echo "${!env_name}"; return; fi
  "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true
}

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT")
if [ "$(basename "$ENGINE")" = podman ]; then
  # --network host: podman's bridge network cannot reach the package index on these machines.
  ENGINE_BUILD_FLAGS+=(--network host)
  cert=$(pip_setting cert)
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    # Not over the image's own /etc/ssl/certs bundle: ca-certificates rewrites that one while it installs.
    ENGINE_BUILD_FLAGS+=(--volume "$(realpath "$cert"):/run/aimass-build/ca.crt:ro")
    build_args+=(--build-arg PIP_CERT_FILE=/run/aimass-build/ca.crt)
  fi
  wheels=$(pip_setting find-links)
  if [ -n "$wheels" ] && [ -d "$wheels" ]; then
    ENGINE_BUILD_FLAGS+=(--volume "$(realpath "$wheels"):/run/aimass-build/wheels:ro")
    build_args+=(--build-arg PIP_WHEELS=/run/aimass-build/wheels)
    # The wheel folder already holds this torch build: no need for PyTorch's own index (often unreachable too).
    if compgen -G "$wheels/torch-2.14.1+${TORCH_VARIANT}-*.whl" >/dev/null; then
      build_args+=(--build-arg TORCH_INDEX_URL=)
    fi
  fi
fi

echo "building $IMAGE on $BASE_IMAGE with $ENGINE (torch $TORCH_VARIANT)"
started=$(date +%s)
"$ENGINE" build "${ENGINE_BUILD_FLAGS[@]}" "${build_args[@]}" -t "$IMAGE" .
echo "built $IMAGE in $(( $(date +%s) - started )) s: $("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" \
  | awk '{printf "%.2f GB", $1 / 1e9}')"
