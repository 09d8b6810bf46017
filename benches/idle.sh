#!/usr/bin/env bash
# Memory per idle keep-alive connection: aperture --cores 1, 10,000 connections that have sent
# nothing, resident memory of the proxy before and after (from /proc). Loopback only; every
# process it starts is stopped on exit.
#
#   benches/idle.sh [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ulimit -n $((N + 1024))
cargo build --release --quiet
WORK=$(mktemp -d)
cleanup() { kill "${APID:-}" "${CPID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cat > "$WORK/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18182"
insecure: true
dbbackend: sqlite
debuglevel: warn
idletimeout: 10m
prometheus:
  enabled: true
  listenaddr: "127.0.0.1:18183"
authenticator:
  dev:
    listenaddr: "127.0.0.1:18189"
services:
  - name: free
    hostregexp: ".*"
    address: "127.0.0.1:9"
    protocol: http
    auth: "off"
YAML
target/release/aperture --config "$WORK/aperture.yaml" --basedir "$WORK" --cores 1 2>"$WORK/log" &
APID=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18183/healthz && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$APID/status"; }
BEFORE=$(rss)
python3 - "$N" <<'PY' &
import socket, sys, time
conns = []
for _ in range(int(sys.argv[1])):
    s = socket.create_connection(("127.0.0.1", 18182))
    conns.append(s)
time.sleep(3600)
PY
CPID=$!
active() { curl -s http://127.0.0.1:18183/metrics | awk '/^aperture_connections_active/ {s += $2} END {print s + 0}'; }
for _ in $(seq 600); do [ "$(active)" -ge "$N" ] && break; sleep 0.1; done
sleep 1
AFTER=$(rss)
echo "aperture --cores 1: $(active) idle connections; RSS $((BEFORE / 1024)) MiB -> $((AFTER / 1024)) MiB;" \
     "$(( (AFTER - BEFORE) * 1024 / N )) bytes per idle connection"
