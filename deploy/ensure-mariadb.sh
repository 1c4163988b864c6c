#!/usr/bin/env bash
# Installs mariadb-server (Debian package) when mariadbd is not on this machine.
# Tests, the benchmark and the local demo start their own throwaway servers from it;
# the package's own service is never used.
set -euo pipefail
if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
  exit 0
fi
echo "mariadbd not found: installing mariadb-server" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq mariadb-server "$@" >/dev/null
