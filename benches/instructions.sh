#!/usr/bin/env bash
# User-space instructions per request under valgrind (callgrind), the figure that stays put on
# this VM (timing swings by 2x with the host). For each target the proxy runs under callgrind;
# after a warm-up the counters are zeroed, h2load sends N requests over 8 keep-alive connections,
# and the instructions counted since the zeroing, divided by N, are printed. aperture runs with
# --cores 1 on the legacy (epoll) driver, which valgrind handles; nginx as a single process.
#
#   benches/instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need h2load || ! need nginx || ! need valgrind; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client nginx-light valgrind >/dev/null
fi
cargo build --release --quiet
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/origin.pid" ] && kill "$(cat "$WORK/origin.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/origin.conf" <<NGINX
worker_processes 1; daemon on; pid $WORK/origin.pid; error_log $WORK/origin-error.log warn;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18280; location / { return 200 "hello origin\\n"; } } }
NGINX
nginx -c "$WORK/origin.conf" -p "$WORK"
cat > "$WORK/proxy.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $WORK/proxy.pid; error_log $WORK/proxy-error.log warn;
events { worker_connections 1024; }
http { access_log off; upstream origin { server 127.0.0.1:18280; keepalive 64; }
  server { listen 127.0.0.1:18281; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
cat > "$WORK/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18282"
insecure: true
dbbackend: sqlite
debuglevel: warn
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:18289"
services:
  - name: free
    hostregexp: ".*"
    pathregexp: "^/free"
    address: "127.0.0.1:18280"
    protocol: http
    auth: "off"
  - name: paid
    hostregexp: ".*"
    address: "127.0.0.1:18280"
    protocol: http
    price: 10
YAML

wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; return 1; }
# instructions per request: zero the counters, send N requests, dump, read the dump's total.
measure() { # name pid url [header]
  local name=$1 pid=$2 url=$3 header=${4:-}
  h2load --h1 -n 200 -c 8 ${header:+-H "$header"} "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  h2load --h1 -n "$N" -c 8 ${header:+-H "$header"} "$url" >/dev/null
  callgrind_control -d "$pid" >/dev/null &
  local ctl=$!
  # The dump happens when the process next runs code: nudge it with one more request.
  sleep 0.5; curl -s -o /dev/null ${header:+-H "$header"} "$url" || true
  wait "$ctl" || true
  local ir
  ir=$(ls -t "$WORK"/callgrind.out.* | head -1 | xargs grep -h '^totals:' | awk '{print $2}')
  printf "| %-24s | %12d |\n" "$name" $((ir / N))
}

echo "instructions per request (callgrind, N=$N, 8 keep-alive connections, one more request of noise)"
echo
echo "| target                   | instr / req  |"
echo "|--------------------------|-------------:|"
(cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" nginx -c "$WORK/proxy.conf" -p "$WORK" 2>/dev/null) &
NPID=$!; PIDS+=("$NPID")
wait_up http://127.0.0.1:18281/
measure "nginx proxy_pass" "$NPID" http://127.0.0.1:18281/
kill "$NPID"; wait "$NPID" 2>/dev/null || true

MONOIO_FORCE_LEGACY_DRIVER=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
  target/release/aperture --config "$WORK/aperture.yaml" --basedir "$WORK" --cores 1 --no-pin 2>"$WORK/aperture.log" &
APID=$!; PIDS+=("$APID")
wait_up http://127.0.0.1:18282/free
CHALLENGE=$(curl -s -D - -o /dev/null http://127.0.0.1:18282/paid | tr -d '\r' | grep '^Www-Authenticate: L402')
MAC=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$CHALLENGE")
INVOICE=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$CHALLENGE")
PREIMAGE=$(curl -s -X POST http://127.0.0.1:18289/pay -d "{\"invoice\":\"$INVOICE\"}" | sed -E 's/.*"preimage":"([0-9a-f]+)".*/\1/')
measure "aperture free" "$APID" http://127.0.0.1:18282/free
measure "aperture paid (L402)" "$APID" http://127.0.0.1:18282/paid "authorization: L402 $MAC:$PREIMAGE"
measure "aperture 402 challenge" "$APID" http://127.0.0.1:18282/paid
