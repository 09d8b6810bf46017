#!/usr/bin/env bash
# The worst case of fleet-wide rate limits: a rule with slice 1 that never denies (10^9 per
# second, burst 1), so every request waits one lease round trip to Redis; against the same rule
# decided per instance. `aperture --cores 1` with auth off, an nginx origin and redis-server on
# CPU 0, `wrk -t1 -c32` on CPU 1, alternated rounds; loopback only.
#
#   benches/fleet-worst.sh [--rounds N] [--duration SECONDS] [--bin PATH]
#
# Needs nginx, redis-server, wrk and taskset (benches/load.sh installs the first three but
# redis-server: apt-get install redis-server). Builds the release binary unless --bin is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 DURATION=5 BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/aperture
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

cat >"$WORK/origin.conf" <<NGINX
worker_processes 1; daemon off; master_process off;
pid $WORK/origin.pid; error_log $WORK/origin-error.log warn;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:18680; location / { return 200 "hello origin\n"; } } }
NGINX
for mode in local redis; do
  mkdir -p "$WORK/$mode"
  top=""
  [ $mode = redis ] && top=$'ratelimitbackend: redis\nredis:\n  address: "127.0.0.1:18682"\n'
  cat >"$WORK/$mode/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18681"
insecure: true
dbbackend: sqlite
debuglevel: warn
${top}authenticator:
  disable: true
services:
  - name: free
    hostregexp: ".*"
    address: "127.0.0.1:18680"
    protocol: http
    auth: "off"
    ratelimits:
      - requests: 1000000000
        per: 1s
        burst: 1
YAML
done
taskset -c 0 nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null 2>&1 & PIDS+=("$!")
taskset -c 0 redis-server --port 18682 --bind 127.0.0.1 --save "" --appendonly no >/dev/null & PIDS+=("$!")
for _ in $(seq 50); do redis-cli -p 18682 ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "| round | backend | req/s | p99 |"
echo "|---|---|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for mode in local redis; do
    taskset -c 0 "$BIN" --config "$WORK/$mode/aperture.yaml" --basedir "$WORK/$mode" --cores 1 \
      2>"$WORK/$mode.log" >/dev/null &
    ap=$!
    for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18681/ && break; sleep 0.1; done
    out=$(taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" --latency http://127.0.0.1:18681/)
    rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "| $round | $mode | $rps | $p99 |"
    kill "$ap"; wait "$ap" 2>/dev/null || true
  done
done
