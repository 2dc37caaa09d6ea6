#!/usr/bin/env bash
# Make sure the four Fashion-MNIST IDX files are on this machine: use $AIMASS_FASHION_MNIST_DIR if set, else
# Debian's dataset-fashion-mnist package (installed with apt when missing and apt is usable).
set -euo pipefail

files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
debian_dir=/usr/share/datasets/fashion-mnist

has_all_files() {
  local dir=$1 name
  for name in "${files[@]}"; do [ -f "$dir/$name" ] || return 1; done
}

if [ -n "${AIMASS_FASHION_MNIST_DIR:-}" ]; then
  if has_all_files "$AIMASS_FASHION_MNIST_DIR"; then exit 0; fi
  echo "AIMASS_FASHION_MNIST_DIR=$AIMASS_FASHION_MNIST_DIR does not hold all of: ${files[*]}" >&2
  exit 1
fi
has_all_files "$debian_dir" && exit 0

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo="sudo -n"; }
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
    echo "installing Debian's dataset-fashion-mnist package" >&2
    $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    has_all_files "$debian_dir" && exit 0
  fi
fi
cat >&2 <<MSG
Fashion-MNIST is not on this machine and could not be installed with apt.
Either install Debian's package (sudo apt-get install dataset-fashion-mnist), or put the four IDX files
  ${files[*]}
in a folder and point AIMASS_FASHION_MNIST_DIR at it, e.g.
  export AIMASS_FASHION_MNIST_DIR=\$HOME/fashion-mnist
MSG
exit 1
