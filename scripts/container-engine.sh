# Sourced by the container scripts: picks Docker or podman and the flags each needs on this machine.
#   DOCKER=podman|docker  overrides the choice; otherwise the first engine that answers wins (podman, then docker).
# Sets ENGINE (the command) and ENGINE_RUN_FLAGS / ENGINE_BUILD_FLAGS (extra flags for run and build).
_project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ -z "${DOCKER:-}" ]; then
  if command -v podman >/dev/null 2>&1; then DOCKER=podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then DOCKER=docker
  else
    echo "no container engine: install podman (apt-get install -y podman runc) or Docker, or set DOCKER=" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
ENGINE=$DOCKER
ENGINE_RUN_FLAGS=()
ENGINE_BUILD_FLAGS=()
if [ "$(basename "$ENGINE")" = podman ]; then
  # runc and limits of 1024 (scripts/podman/containers.conf says why); a user's own CONTAINERS_CONF wins.
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$_project_root/scripts/podman/containers.conf}
  ENGINE_RUN_FLAGS=(--runtime runc)
  ENGINE_BUILD_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi
