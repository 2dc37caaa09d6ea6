#!/usr/bin/env bash
# ensure-command.sh COMMAND DEBIAN_PACKAGE: install the Debian package with apt when COMMAND is missing
# (as root, or through passwordless sudo); otherwise say what to install and fail.
set -euo pipefail
command_name=$1 package=$2
command -v "$command_name" >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo="sudo -n"; }
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "installing Debian's $package (for $command_name)" >&2
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$package" >/dev/null
  command -v "$command_name" >/dev/null 2>&1 && exit 0
fi
echo "$command_name is missing: install Debian's $package (apt-get install $package)" >&2
exit 1
