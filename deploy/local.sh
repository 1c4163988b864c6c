#!/usr/bin/env bash
# Try shadowcut locally: a throwaway MariaDB (its own datadir and a free loopback port; the
# server on port 3306, if any, is never touched) with binlog settings shadowcut needs, a demo
# table (demo.orders) with rows and a small write load, and the daemon against it.
#
#   deploy/local.sh            # then follow the printed instructions; Ctrl-C stops everything
#
# Environment: LISTEN (default 127.0.0.1:8080), ROWS (default 200000), SHADOWCUT_API_TOKEN
# (optional: turns authentication on).
set -euo pipefail

cd "$(dirname "$0")/.."
LISTEN="${LISTEN:-127.0.0.1:8080}"
ROWS="${ROWS:-200000}"

deploy/ensure-mariadb.sh

cargo build --quiet --bin shadowcut
BIN="$PWD/target/debug/shadowcut"
WORK="$(mktemp -d -t shadowcut-local-XXXXXX)"
export SHADOWCUT_DEFAULT_PASSWORD="${SHADOWCUT_DEFAULT_PASSWORD:-demo-$RANDOM$RANDOM}"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$BIN" sandbox --dir "$WORK" --rows "$ROWS" --listen "$LISTEN" &
pids+=($!)
for _ in $(seq 1 600); do
    [ -f "$WORK/shadowcut.toml" ] && break
    sleep 0.2
done
[ -f "$WORK/shadowcut.toml" ] || { echo "the sandbox did not come up" >&2; exit 1; }

"$BIN" serve --config "$WORK/shadowcut.toml" > "$WORK/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "http://$LISTEN/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

AUTH=""
if [ -n "${SHADOWCUT_API_TOKEN:-}" ]; then AUTH=" (token from SHADOWCUT_API_TOKEN)"; fi
cat <<MSG

shadowcut daemon on http://$LISTEN$AUTH, MariaDB sandbox on 127.0.0.1:$(cat "$WORK/sandbox.port")
config: $WORK/shadowcut.toml   daemon log: $WORK/daemon.log

Start a migration (in another shell):
  $BIN migrations --addr http://$LISTEN start --database demo --table orders \\
      --alter "ADD COLUMN status TINYINT NOT NULL DEFAULT 0, ADD INDEX by_customer (customer)" \\
      --chunk-size 2000 --follow
or with curl:
  curl -s -X POST http://$LISTEN/v1/migrations -H 'content-type: application/json' \\
      -d '{"database":"demo","table":"orders","alter":"ADD COLUMN status TINYINT NOT NULL DEFAULT 0"}'
Then: $BIN migrations --addr http://$LISTEN list; curl -s http://$LISTEN/metrics | grep shadowcut_

Ctrl-C stops the daemon and removes the sandbox.
MSG
wait "${pids[1]}"
