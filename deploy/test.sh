#!/usr/bin/env bash
# Runs shadowcut's whole test suite against real, throwaway MariaDB servers that the tests
# start themselves (never the machine's own server). Installs mariadb-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/ensure-mariadb.sh
cargo test --all-targets -- --test-threads=2 "$@"
