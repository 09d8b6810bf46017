#!/usr/bin/env bash
# HTTP/2 load: paid L402 requests through aperture over h2c (prior knowledge) against nginx as a
# plain h2c reverse proxy in front of the same origin, with h2load, in one run.
#
#   benches/h2load.sh [--cores N] [--requests R] [--clients C] [--streams M] [--rounds K]
#                     [--aperture-only]
#   defaults: --cores 1 --requests 200000 --clients 16 --streams 16 --rounds 3
#
# Installs h2load (Debian nghttp2-client) and nginx when missing, builds aperture in release
# mode and starts, on loopback:
#   - the origin: nginx, one process (`master_process off`), a fixed answer, on :18083;
#   - nginx as a plain reverse proxy: `listen 127.0.0.1:18084 http2` (h2c prior knowledge),
#     proxy_pass to the origin with upstream keep-alive, no auth; one worker, `master_process off`
#     (with --cores N > 1: N workers under a master, as aperture has N cores);
#   - `aperture --cores N` (plaintext listener, dev Lightning backend) on :18082, wallet :18089.
# It buys one token through the real 402 -> pay flow, then runs K rounds, each one h2load run
# against nginx and then one against aperture (`authorization: L402 <macaroon>:<preimage>` on every
# request), with the same flags (`-n R -c C -m M`). Proxies and origin are pinned to CPU 0 (CPUs
# 0..N-1 for aperture with --cores N), h2load to the last CPU (taskset; no pinning on one CPU).
# Prints each run's req/s and a markdown table: the median req/s per side and aperture / nginx.
# Exit status 1 if any aperture request was not a 2xx. --aperture-only skips the nginx runs.
# Everything it starts is stopped on exit; nothing leaves loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

CORES=1 REQUESTS=200000 CLIENTS=16 STREAMS=16 ROUNDS=3 NGINX=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --aperture-only) NGINX=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$ROUNDS" -ge 1 ] || { echo "--rounds must be at least 1" >&2; exit 2; }

if ! command -v h2load >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 || ! command -v taskset >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client nginx-light util-linux >/dev/null
fi
cargo build --release --quiet
BIN=$PWD/target/release/aperture
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NCPU=$(nproc)
LOAD_CPU=$((NCPU - 1))
PROXY_CPUS=0
[ "$CORES" -gt 1 ] && PROXY_CPUS=0-$((CORES - 1))
# spawn CPUS cmd...: in the background, pid (taskset execs the command) in LAST and in PIDS.
spawn() {
  if [ "$NCPU" -gt 1 ]; then taskset -c "$1" "${@:2}" & else "${@:2}" & fi
  LAST=$!
  PIDS+=("$LAST")
}
pin() { if [ "$NCPU" -gt 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "$1 never answered" >&2; return 1; }

cat > "$WORK/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18082"
insecure: true
dbbackend: sqlite
sqlite:
  databasefilename: "$WORK/aperture.db"
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
# nginx in the foreground as one process (no master), so $! is the process doing the work (with
# --cores N > 1 the proxy is a master: stopping it stops its workers). The
# origin is fast enough that the figures measure the proxies (a threaded Python origin was not).
nginx_conf() { # name http-block-body [processes-line]
  cat > "$WORK/$1.conf" <<NGINX
${3:-worker_processes 1; daemon off; master_process off;}
pid $WORK/$1.pid; error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # h2load keeps its connections for the whole run: no GOAWAY after nginx's default 1000.
  keepalive_requests 10000000;
  # Room for an idle upstream connection per stream in flight (clients × streams), so that nginx
  # does not close and reopen origin connections under -m16 (load.sh keeps 64 for 8 streams).
  upstream origin { server 127.0.0.1:18083; keepalive $((CLIENTS * STREAMS < 64 ? 64 : CLIENTS * STREAMS)); }
  $2
}
NGINX
}
nginx_conf origin 'server { listen 127.0.0.1:18083; location / { return 200 "hello, paid\n"; } }'
nginx_conf proxy 'server { listen 127.0.0.1:18084 http2;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }' \
  "$([ "$CORES" -gt 1 ] && echo "worker_processes $CORES; daemon off; master_process on;")"
spawn 0 nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null
wait_up http://127.0.0.1:18083/
if [ $NGINX = 1 ]; then
  spawn "$PROXY_CPUS" nginx -c "$WORK/proxy.conf" -p "$WORK" >/dev/null
  for _ in $(seq 100); do curl -s -o /dev/null --http2-prior-knowledge http://127.0.0.1:18084/ && break; sleep 0.1; done
fi
spawn "$PROXY_CPUS" "$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" --cores "$CORES" --no-pin 2>"$WORK/log"
AP=$LAST
wait_up http://127.0.0.1:18082/

CHAL=$(curl -si http://127.0.0.1:18082/x | tr -d '\r' | grep -i '^www-authenticate: L402' | head -1)
MAC=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$CHAL")
INV=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$CHAL")
PRE=$(curl -s -X POST http://127.0.0.1:18089/pay -d "{\"invoice\": \"$INV\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
AUTH="L402 $MAC:$PRE"
[ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge -H "authorization: $AUTH" http://127.0.0.1:18082/x)" = 200 ]
[ $NGINX = 0 ] || [ "$(curl -s -o /dev/null -w '%{http_code}' --http2-prior-knowledge http://127.0.0.1:18084/x)" = 200 ]

echo "aperture $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + uncommitted src changes') --cores $CORES; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'); h2load -n $REQUESTS -c $CLIENTS -m $STREAMS; $NCPU CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %T') UTC"

# run NAME ROUND h2load-args...: one h2load run, its req/s appended to $WORK/NAME.rps.
FAILED=0
run() {
  local name=$1 round=$2 out="$WORK/$1.$2"
  pin "$LOAD_CPU" h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "${@:3}" >"$out" 2>&1 || true
  local rps ok codes
  rps=$(grep -oE 'finished in [^,]+, [0-9.]+ req/s' "$out" | grep -oE '[0-9.]+ req/s' | grep -oE '[0-9.]+' || echo 0)
  ok=$(awk '/^status codes:/ {print $3}' "$out")
  codes=$(grep -E '^status codes:' "$out" || echo "no summary")
  echo "round $round, $name: $rps req/s ($codes)"
  [ "${ok:-0}" = "$REQUESTS" ] || { [ "$name" = aperture ] && FAILED=1; grep -E '^(requests|status codes):' "$out" >&2 || cat "$out" >&2; }
  echo "$rps" >> "$WORK/$name.rps"
}
for ((r = 1; r <= ROUNDS; r++)); do
  [ $NGINX = 0 ] || run nginx "$r" http://127.0.0.1:18084/x
  run aperture "$r" -H "authorization: $AUTH" http://127.0.0.1:18082/x
done
kill -0 "$AP" 2>/dev/null || { echo "aperture exited during the runs" >&2; FAILED=1; }
grep -i panic "$WORK/log" >&2 && FAILED=1

median() { sort -g "$WORK/$1.rps" | awk '{v[NR] = $1} END {if (NR % 2) printf "%.0f", v[(NR + 1) / 2]; else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
all() { awk '{printf "%s%.0f", sep, $1; sep = ", "} END {print ""}' "$WORK/$1.rps"; }
AP_RPS=$(median aperture)
echo
echo "| h2c, h2load -c$CLIENTS -m$STREAMS, $REQUESTS requests × $ROUNDS rounds | median req/s | runs | vs nginx |"
echo "|---|---:|---|---:|"
if [ $NGINX = 1 ]; then
  NG_RPS=$(median nginx)
  echo "| nginx proxy_pass (no auth) | $NG_RPS | $(all nginx) | 1.00× |"
  echo "| aperture paid L402, --cores $CORES | $AP_RPS | $(all aperture) | $(awk -v a="$AP_RPS" -v n="$NG_RPS" 'BEGIN {printf "%.2f", (n > 0) ? a / n : 0}')× |"
else
  echo "| aperture paid L402, --cores $CORES | $AP_RPS | $(all aperture) | – |"
fi
# The line earlier versions printed (scripts may read it).
echo "h2 paid req/s: $AP_RPS req/s"
exit $FAILED
