#!/usr/bin/env bash
# Load benchmark: aperture vs nginx in front of the same origin, on loopback.
#
#   benches/load.sh [--cores N] [--duration SECONDS] [--connections C]
#
# Installs wrk and nginx (Debian) when missing, builds aperture in release mode, starts
#   - an nginx origin (fixed 13-byte answer) on 127.0.0.1:18080,
#   - nginx as a plain reverse proxy (proxy_pass, upstream keep-alive, no auth) on :18081,
#   - aperture --cores N on :18082 with the dev Lightning backend (wallet on :18089),
# buys one L402 token through the real 402 -> pay flow, then runs wrk (pinned to its own CPU
# where the machine has more than one) against: nginx proxy, aperture free (auth off),
# aperture paid (valid token verified per request) and aperture 402 (a challenge minted per
# request). Prints req/s, p99 latency and the proxy process's CPU time per request.
# Everything it starts is stopped on exit; nothing leaves loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

CORES=1 DURATION=10 CONNS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
cargo build --release --quiet
BIN=$PWD/target/release/aperture

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in origin proxy; do [ -f "$WORK/$n.pid" ] && kill "$(cat "$WORK/$n.pid")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

NCPU=$(nproc)
# With more than one CPU, the load generator gets the last one and the proxies the rest.
if [ "$NCPU" -gt 1 ]; then WRK_CPU=$((NCPU - 1)); else WRK_CPU=0; fi

# Two nginx instances, so that the proxy's CPU time does not include the origin's.
nginx_conf() { # name server-block
  cat > "$WORK/$1.conf" <<NGINX
worker_processes 1;
daemon on;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:18080; keepalive 64; }
  $2
}
NGINX
  nginx -c "$WORK/$1.conf" -p "$WORK"
}
nginx_conf origin 'server { listen 127.0.0.1:18080; location / { return 200 "hello origin\n"; } }'
nginx_conf proxy 'server { listen 127.0.0.1:18081; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }'

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
  - name: free
    hostregexp: ".*"
    pathregexp: "^/free"
    address: "127.0.0.1:18080"
    protocol: http
    auth: "off"
  - name: limited
    hostregexp: ".*"
    pathregexp: "^/limited"
    address: "127.0.0.1:18080"
    protocol: http
    price: 10
    ratelimits:
      - requests: 100000000
        per: 1s
      - pathregexp: "^/limited/expensive"
        requests: 5
        per: 1m
  - name: paid
    hostregexp: ".*"
    address: "127.0.0.1:18080"
    protocol: http
    price: 10
YAML
"$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" --cores "$CORES" 2>"$WORK/aperture.log" &
APID=$!
PIDS+=("$APID")
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18082/free && break; sleep 0.1; done

# Buy tokens the way a client does: 402 -> pay the invoice at the dev wallet -> retry.
buy() { # path
  local challenge mac invoice preimage
  challenge=$(curl -s -D - -o /dev/null "http://127.0.0.1:18082$1" | tr -d '\r' | grep '^Www-Authenticate: L402')
  mac=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$challenge")
  invoice=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$challenge")
  preimage=$(curl -s -X POST http://127.0.0.1:18089/pay -d "{\"invoice\":\"$invoice\"}" | sed -E 's/.*"preimage":"([0-9a-f]+)".*/\1/')
  echo "L402 $mac:$preimage"
}
PAID_AUTH=$(buy /paid)
LIMITED_AUTH=$(buy /limited)
for pair in "/paid|$PAID_AUTH" "/limited|$LIMITED_AUTH"; do
  STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: ${pair#*|}" "http://127.0.0.1:18082${pair%%|*}")
  [ "$STATUS" = 200 ] || { echo "paid request to ${pair%%|*} got $STATUS" >&2; exit 1; }
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_worker() { pgrep -P "$(cat "$WORK/proxy.pid")" | head -1; }
TICK=$(getconf CLK_TCK)

run() { # name url pid [lua]
  local name=$1 url=$2 pid=$3 lua=${4:-}
  local before after out reqs rps p99
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency ${lua:+-s "$lua"} "$url")
  after=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  local us_per_req
  us_per_req=$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf "| %-22s | %10s | %8s | %12s | %8s |\n" "$name" "$rps" "$p99" "$us_per_req" "${non2xx:-0}"
}

echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); aperture --cores $CORES; wrk -t1 -c$CONNS -d${DURATION}s pinned to CPU $WRK_CPU"
echo
echo "| target                 |      req/s |      p99 | CPU us / req | non-2xx  |"
echo "|------------------------|-----------:|---------:|-------------:|---------:|"
run "nginx proxy_pass" http://127.0.0.1:18081/ "$(nginx_worker)"
run "aperture free" http://127.0.0.1:18082/free "$APID"
export L402_AUTH=$PAID_AUTH; run "aperture paid (L402)" http://127.0.0.1:18082/paid "$APID" benches/wrk/paid.lua
export L402_AUTH=$LIMITED_AUTH; run "aperture paid + ratelimits" http://127.0.0.1:18082/limited "$APID" benches/wrk/paid.lua
run "aperture 402 challenge" http://127.0.0.1:18082/paid "$APID"
echo
echo "(the 402 row counts challenges as non-2xx: every one of them is a fresh invoice + macaroon)"
