#!/usr/bin/env bash
# A Debian bookworm image with Python 3.11, for building the project image where no registry is reachable (so
# python:3.11-slim cannot be pulled). It is built from the Debian mirror apt already uses, with debootstrap, and
# imported into the container engine; `make image` then builds on it with BASE_IMAGE=aimass-base:bookworm.
#
#   scripts/build-base-image.sh                 # podman or docker, whichever is here (DOCKER= overrides)
#
# Needs root (debootstrap) and debootstrap itself (apt-get install -y debootstrap). Debian's python3 is 3.11.2,
# the release bookworm ships; python-is-python3 gives the `python` the Dockerfile calls.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-aimass-base:bookworm}
SUITE=${SUITE:-bookworm}
# The Debian mirror apt's own sources name, so the base comes from where this machine's packages come from.
MIRROR=${MIRROR:-$( (grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d/ \
  2>/dev/null || true) | head -n1 | awk '{print $2}')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-$(command -v podman >/dev/null && echo podman || echo docker)}

command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install -y debootstrap" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

if "$DOCKER" image exists "$BASE_IMAGE" 2>/dev/null || "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "$BASE_IMAGE already exists (remove it to rebuild: $DOCKER rmi $BASE_IMAGE)"
  exit 0
fi

ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 20 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
# apt's package lists and caches are rebuilt by whoever installs more; they only make the base bigger. So do
# translations, manuals and package docs (47 MB of translations alone), which dpkg then leaves out of later
# installs too, as Debian's own slim images do.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/usr/share/locale/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/info/*
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/aimass-slim" <<'CFG'
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
CFG
tar -C "$ROOTFS" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE"
"$DOCKER" run --rm "$BASE_IMAGE" python --version
