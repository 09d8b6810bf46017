#!/usr/bin/env bash
# A fleet on loopback, for humans (not CI): PostgreSQL, Redis, three aperture instances and
# haproxy in front, then what a fleet must do, step by step:
#   1. a token bought through one instance is accepted by the others;
#   2. a limit of 10 requests per minute holds for one client spread over all three
#      (ratelimitbackend: redis);
#   3. Redis stopped: each instance falls back to its own limit, says so in its log and in
#      aperture_ratelimit_backend_fleet; Redis started again: fleet-wide again, by itself;
#   4. a token revoked with `aperture token revoke` is refused by every instance.
#
#   scripts/fleet.sh [--bin PATH]     (default: cargo build --release, target/release/aperture)
#
# Installs what is missing from Debian (postgresql, redis-server, haproxy, curl). Ports 18600
# (haproxy), 18601 (PostgreSQL), 18602 (Redis), 18611-18613 (instances), 18621-18623 (their dev
# wallets), 18631-18633 (their metrics). Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need redis-server || missing+=(redis-server)
need haproxy || missing+=(haproxy)
need curl || missing+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/aperture
fi

WORK=$(mktemp -d /tmp/aperture-fleet.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl -D $WORK/pg/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
wait_up() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

say "PostgreSQL on 127.0.0.1:18601, Redis on 127.0.0.1:18602"
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
as_pg "$PG_BIN/initdb -D $WORK/pg/data -A trust -U postgres" >/dev/null
as_pg "$PG_BIN/pg_ctl -D $WORK/pg/data -l $WORK/pg/log -w -o '-k $WORK/pg -c listen_addresses=127.0.0.1 -p 18601' start" >/dev/null
as_pg "$PG_BIN/createdb -h 127.0.0.1 -p 18601 -U postgres aperture"
start_redis() {
  redis-server --port 18602 --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS=$!
  PIDS+=("$REDIS")
  for _ in $(seq 100); do redis-cli -p 18602 ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start" >&2; exit 1
}
start_redis

say "three instances (one master secret, one PostgreSQL, one Redis) and haproxy on 127.0.0.1:18600"
head -c 32 /dev/urandom >"$WORK/master.secret"
for i in 1 2 3; do
  mkdir -p "$WORK/a$i"
  install -m 600 "$WORK/master.secret" "$WORK/a$i/master.secret"
  cat >"$WORK/a$i/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:1861$i"
insecure: true
debuglevel: info
dbbackend: postgres
postgres:
  host: "127.0.0.1"
  port: 18601
  user: "postgres"
  password: ""
  dbname: "aperture"
  requiressl: false
ratelimitbackend: redis
redis:
  address: "127.0.0.1:18602"
  keyprefix: "demo:"
prometheus:
  enabled: true
  listenaddr: "127.0.0.1:1863$i"
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:1862$i"
services:
  - name: api
    hostregexp: ".*"
    address: "127.0.0.1:18640"
    protocol: http
    price: 10
    ratelimits:
      - requests: 10
        per: 1m
        burst: 10
YAML
  "$BIN" --config "$WORK/a$i/aperture.yaml" --basedir "$WORK/a$i" --cores 1 --no-pin \
    >/dev/null 2>"$WORK/a$i.log" &
  PIDS+=("$!")
done
# The upstream: a tiny HTTP server answering 200 to everything.
python3 -c '
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18640), H).serve_forever()
' & PIDS+=("$!")
cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fleet
  bind 127.0.0.1:18600
  default_backend apertures
backend apertures
  balance roundrobin
  http-response set-header X-Instance %s
  server a1 127.0.0.1:18611
  server a2 127.0.0.1:18612
  server a3 127.0.0.1:18613
CFG
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
PIDS+=("$!")
for i in 1 2 3; do wait_up "http://127.0.0.1:1863$i/metrics"; done
wait_up http://127.0.0.1:18640/
wait_up http://127.0.0.1:18600/
grep -h "rate limits are fleet-wide" "$WORK"/a?.log | sed 's/^/  log: /' | head -3

# buy PORT WALLET_PORT: 402 -> pay at that instance's dev wallet -> "L402 mac:preimage"
buy() {
  local challenge mac invoice preimage
  challenge=$(curl -s -D - -o /dev/null "http://127.0.0.1:$1/api" | tr -d '\r' | grep '^Www-Authenticate: L402')
  mac=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$challenge")
  invoice=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$challenge")
  preimage=$(curl -s -X POST "http://127.0.0.1:$2/pay" -d "{\"invoice\":\"$invoice\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
  echo "L402 $mac:$preimage"
}
# token_id "L402 mac:preimage": the last 32 bytes of the macaroon identifier (V2 format).
token_id() {
  python3 - "$1" <<'PY'
import base64, sys
mac = sys.argv[1].split(" ", 1)[1].split(":", 1)[0]
pad = "=" * (-len(mac) % 4)
raw = base64.urlsafe_b64decode(mac + pad) if ("-" in mac or "_" in mac) else base64.b64decode(mac + pad)
i = 1
def varint():
    global i
    x = s = 0
    while True:
        c = raw[i]; i += 1; x |= (c & 0x7F) << s; s += 7
        if c < 0x80:
            return x
while True:
    t = varint()
    if t == 0:
        break
    n = varint(); d = raw[i:i + n]; i += n
    if t == 2:
        print(d[-32:].hex()); break
PY
}
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $2" "$1"; }
# burst N TOKEN: N requests through haproxy, one connection each; prints who answered what.
burst() {
  local n=$1 auth=$2 line passed=0 out=""
  for _ in $(seq "$n"); do
    line=$(curl -s -o /dev/null -D - -H "Authorization: $auth" http://127.0.0.1:18600/api | tr -d '\r' \
      | awk '/^HTTP/ {s=$2} /^[Xx]-[Ii]nstance:/ {i=$2} END {print i ":" s}')
    out+="$line "
    [ "${line#*:}" = 200 ] && passed=$((passed + 1))
  done
  echo "  $out"
  echo "  => $passed of $n passed"
}
fleet_gauge() { curl -s "http://127.0.0.1:1863$1/metrics" | awk '$1 == "aperture_ratelimit_backend_fleet" {print $2}'; }

say "1. a token bought through instance a1 is accepted by a2 and a3"
T1=$(buy 18611 18621)
for i in 1 2 3; do echo "  a$i: HTTP $(status "http://127.0.0.1:1861$i/api" "$T1")"; done

say "2. 10 requests per minute, one client (a fresh token) spread over all three by haproxy"
T2=$(buy 18612 18622)
burst 15 "$T2"

say "3. Redis stopped"
kill "$REDIS"; wait "$REDIS" 2>/dev/null || true
for i in 1 2 3; do
  for _ in $(seq 50); do [ "$(fleet_gauge $i)" = 0 ] && break; sleep 0.1; done
  echo "  a$i: aperture_ratelimit_backend_fleet $(fleet_gauge $i)"
done
grep -h "unreachable\|lost Redis" "$WORK"/a?.log | sed -E 's/^/  log: /' | head -3
echo "  a fresh token, 36 requests: each instance now allows its own 10"
T3=$(buy 18613 18623)
burst 36 "$T3"

say "3b. Redis started again"
start_redis
for i in 1 2 3; do
  for _ in $(seq 50); do [ "$(fleet_gauge $i)" = 1 ] && break; sleep 0.1; done
  echo "  a$i: aperture_ratelimit_backend_fleet $(fleet_gauge $i)"
done
grep -h "reachable again" "$WORK"/a?.log | sed -E 's/^/  log: /' | head -3
T4=$(buy 18611 18621)
burst 15 "$T4"

say "4. revoke the token of step 1 (aperture token revoke, through the shared database)"
ID=$(token_id "$T1")
"$BIN" token revoke "$ID" --config "$WORK/a1/aperture.yaml" 2>&1 | sed 's/^/  /'
start=$(date +%s%N)
for _ in $(seq 100); do
  codes=$(for i in 1 2 3; do status "http://127.0.0.1:1861$i/api" "$T1"; done | sort -u)
  [ "$codes" != 200 ] && ! grep -q 200 <<<"$codes" && break
  sleep 0.02
done
echo "  refused by all three within $(( ($(date +%s%N) - start) / 1000000 )) ms of the revoke command returning:"
for i in 1 2 3; do echo "  a$i: HTTP $(status "http://127.0.0.1:1861$i/api" "$T1")"; done
