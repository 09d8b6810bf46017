#!/usr/bin/env bash
# HTTP/2 load: paid L402 requests through aperture over h2c (prior knowledge), with h2load.
#
#   benches/h2load.sh [--cores N] [--requests R] [--clients C] [--streams M]
#
# Installs h2load (Debian nghttp2-client) when missing, builds aperture in release mode, starts
# aperture --dev (plaintext listener, demo origin, dev Lightning backend) on :18082 with the
# wallet on :18089, buys one token through the real 402 -> pay flow, then runs h2load with
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

if ! command -v h2load >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
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
# The origin: a tiny keep-alive HTTP/1.1 server (python, one thread per connection).
python3 - <<'PY' &
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"hello, paid\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", 18083), H).serve_forever()
PY
ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null || true; cleanup' EXIT
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
