#!/usr/bin/env bash
# HTTP/2 load: paid L402 requests through aperture over h2c (prior knowledge), with h2load.
#
#   benches/h2load.sh [--cores N] [--requests R] [--clients C] [--streams M]
#
# Installs h2load (Debian nghttp2-client) and nginx when missing, builds aperture in release
# mode, starts an nginx origin (fixed answer) on :18083 and aperture (plaintext listener, dev
# Lightning backend) on :18082 with the wallet on :18089, buys one token through the real 402 -> pay flow, then runs h2load with
# `authorization: L402 <macaroon>:<preimage>` and prints its req/s. Everything it starts is
# stopped on exit; nothing leaves loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

CORES=1 REQUESTS=200000 CLIENTS=16 STREAMS=16
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v h2load >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client nginx-light >/dev/null
fi
cargo build --release --quiet
BIN=$PWD/target/release/aperture
WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18082"
insecure: true
dbbackend: sqlite
debuglevel: warn
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:18089"
services:
  - name: demo
    hostregexp: ".*"
    address: "127.0.0.1:18083"
    protocol: http
    price: 10
YAML
# The origin: nginx with a fixed answer (one worker; fast enough that the figure measures the
# proxy, which a threaded Python origin was not).
cat > "$WORK/origin.conf" <<NGINX
worker_processes 1;
daemon on;
pid $WORK/origin.pid;
error_log $WORK/origin-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18083;
    keepalive_requests 100000;
    location / { return 200 "hello, paid\n"; }
  }
}
NGINX
nginx -c "$WORK/origin.conf" -p "$WORK"
trap '[ -f "$WORK/origin.pid" ] && kill "$(cat "$WORK/origin.pid")" 2>/dev/null || true; cleanup' EXIT
"$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" --cores "$CORES" --no-pin 2>"$WORK/log" &
PID=$!
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18083/ && curl -s -o /dev/null http://127.0.0.1:18082/ && break; sleep 0.1; done

CHAL=$(curl -si http://127.0.0.1:18082/x | tr -d '\r' | grep -i '^www-authenticate: L402' | head -1)
MAC=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$CHAL")
INV=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$CHAL")
PRE=$(curl -s -X POST http://127.0.0.1:18089/pay -d "{\"invoice\": \"$INV\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
AUTH="L402 $MAC:$PRE"
[ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge -H "authorization: $AUTH" http://127.0.0.1:18082/x)" = 200 ]

h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -H "authorization: $AUTH" http://127.0.0.1:18082/x \
  | tee "$WORK/out" | grep -E '^(finished in|requests:|status codes:)'
echo "h2 paid req/s: $(grep -oE 'finished in [^,]+, [0-9.]+ req/s' "$WORK/out" | grep -oE '[0-9.]+ req/s')"
