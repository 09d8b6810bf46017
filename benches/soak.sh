#!/usr/bin/env bash
# Soak: one aperture process under a mixed load for a long time, watching RSS, descriptors,
# unasked-for errors and panics.
#
#   benches/soak.sh [--duration SECONDS] [--cores N]      (defaults: 600 s, 2 cores)
#
# On a fresh Debian machine it installs what is missing (wrk, nginx-light, nghttp2-client,
# curl, python3), builds aperture (release) and starts, on loopback:
#   - origin: nginx, one process: HTTP/1.1 on :18780 (a fixed 13-byte answer) and h2c (prior
#     knowledge) on :18781 (a fixed gRPC-shaped answer: content-type application/grpc,
#     grpc-status 0; nginx's default keepalive_requests, so a GOAWAY every 1000 streams);
#   - `aperture --cores N`, dev Lightning backend (wallet :18783), on :18782, metrics listener on
#     :18784, its config in a file in a temp dir: service `paid` (^/paid, price 10, HTTP/1.1
#     upstream), `grpc` (^/soak\., price 5, `protocol: h2c` upstream) and `abuse` (^/abuse\., the
#     same, for (8) only, so that its aborted uploads do not count against `grpc`'s checks);
#   - a second process, `aperture --cores 1` with its TLS listener (`insecure: false`, the
#     self-signed certificate it makes in its basedir) on :18785, wallet :18786, metrics :18787,
#     the same services: HTTP/2 over TLS (ALPN h2) on the native server.
# It buys one token per service and process through 402 -> pay -> retry, then for DURATION runs
# at once:
#   (1) paid HTTP/1.1: wrk -t1 -c16 with the `paid` token, unthrottled;
#   (2) h2c gRPC-shaped POSTs with the `grpc` token: h2load -c4 -m8, repeated (30 s runs);
#   (3) 402 minting: wrk -c2, 200 ms between requests per connection, no token (~10/s);
#   (4) connection churn: wrk -c2 with `Connection: close`, 50 ms apart, the paid token (~40/s);
#   (5) slowloris: 20 connections trickling one header byte every 3 s, reopened when closed;
#   (6) kill -HUP every 30 s, the config file alternating between two versions (one has an
#       extra service), so every reload really rebuilds the routes.
#   (7) h2 over TLS: h2load -c4 -m8 (ALPN h2) GETs of /paid on the TLS process, 30 s runs;
#   (8) misbehaving h2 clients (benches/h2abuse.py), one on h2c and one on TLS, a new connection
#       every 50 ms: streams reset right after opening (100 a connection), uploads reset or
#       dropped mid-body, PING/SETTINGS bursts, requests dropped unread, a zero receive window,
#       WINDOW_UPDATE 0 on open streams, the client's own GOAWAY, an even stream id.
# Every 5 s it samples both processes' VmRSS and open descriptors into a CSV (kept under
# target/soak/), then prints the mean of the samples in minute 2 vs the last minute (runs under
# 3 minutes: second fifth vs last fifth) and the error checks (both processes alive, no
# "panic" in either log, aperture_connection_panics_total 0 on both); exit status 1 if any check
# fails.
# Every process it starts is stopped on exit (trap), killed if it does not stop within 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=600 CORES=2
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$DURATION" -ge 30 ] || { echo "--duration must be at least 30" >&2; exit 2; }

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need wrk || missing+=(wrk)
need nginx || missing+=(nginx-light)
need h2load || missing+=(nghttp2-client)
need curl || missing+=(curl)
need python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
BIN=$PWD/target/release/aperture

ORIGIN=18780 ORIGIN_H2=18781 PORT=18782 WALLET=18783 METRICS=18784
TPORT=18785 TWALLET=18786 TMETRICS=18787
WORK=$(mktemp -d)
mkdir -p target/soak
TS=$(date -u +%Y%m%dT%H%M%SZ)
CSV=$PWD/target/soak/soak-$TS.csv LOG=$PWD/target/soak/aperture-$TS.log METRICS_OUT=$PWD/target/soak/metrics-$TS.txt
TLOG=$PWD/target/soak/aperture-tls-$TS.log TMETRICS_OUT=$PWD/target/soak/metrics-tls-$TS.txt

PIDS=()
cleanup() {
  exec 2>/dev/null # no job-control notices for what we stop here
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
wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "$1 never answered" >&2; return 1; }

# The origin: nginx in the foreground as one process (no master), so $! is the process.
cat > "$WORK/origin.conf" <<NGINX
worker_processes 1; daemon off; master_process off;
pid $WORK/origin.pid; error_log $WORK/origin-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$ORIGIN; location / { return 200 "hello origin\n"; } }
  # nginx's default keepalive_requests (1000) is kept on purpose: the h2c origin sends GOAWAY
  # every 1000 streams, as real upstreams do, and the proxy must move to a new connection.
  server {
    listen 127.0.0.1:$ORIGIN_H2 http2;
    location / {
      default_type application/grpc;
      add_header grpc-status 0 always;
      return 200 "";
    }
  }
}
NGINX
nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$ORIGIN/"

# Two versions of the config; SIGHUP alternates them (written aside, then renamed into place).
aperture_conf() { # extra-service-yaml
  cat <<YAML
listenaddr: "127.0.0.1:$PORT"
insecure: true
dbbackend: sqlite
sqlite:
  databasefilename: "$WORK/aperture.db"
debuglevel: info
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:$WALLET"
prometheus:
  enabled: true
  listenaddr: "127.0.0.1:$METRICS"
services:
  - name: free
    hostregexp: ".*"
    pathregexp: "^/free"
    address: "127.0.0.1:$ORIGIN"
    protocol: http
    auth: "off"
  - name: paid
    hostregexp: ".*"
    pathregexp: "^/paid"
    address: "127.0.0.1:$ORIGIN"
    protocol: http
    price: 10
  - name: grpc
    hostregexp: ".*"
    pathregexp: '^/soak\\.'
    address: "127.0.0.1:$ORIGIN_H2"
    protocol: h2c
    price: 5
  - name: abuse
    hostregexp: ".*"
    pathregexp: '^/abuse\\.'
    address: "127.0.0.1:$ORIGIN_H2"
    protocol: h2c
    price: 5
$1
YAML
}
aperture_conf "" > "$WORK/a.yaml"
aperture_conf '  - name: extra
    hostregexp: ".*"
    pathregexp: "^/extra"
    address: "127.0.0.1:'"$ORIGIN"'"
    protocol: http
    auth: "off"' > "$WORK/b.yaml"
cp "$WORK/a.yaml" "$WORK/aperture.yaml"
"$BIN" --check-config --config "$WORK/b.yaml" >/dev/null
"$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" --cores "$CORES" >"$LOG" 2>&1 &
AP=$!
PIDS+=("$AP")
wait_up "http://127.0.0.1:$PORT/free"
wait_up "http://127.0.0.1:$METRICS/healthz"
# The TLS process: the same services, its own port, wallet, metrics, database and basedir.
mkdir -p "$WORK/tls"
sed -e "s/127.0.0.1:$PORT\"/127.0.0.1:$TPORT\"/" -e "s/127.0.0.1:$WALLET\"/127.0.0.1:$TWALLET\"/" \
  -e "s/127.0.0.1:$METRICS\"/127.0.0.1:$TMETRICS\"/" -e 's/^insecure: true$/insecure: false/' \
  -e "s#$WORK/aperture.db#$WORK/tls/aperture.db#" "$WORK/a.yaml" > "$WORK/tls.yaml"
grep -q '^insecure: false$' "$WORK/tls.yaml"
"$BIN" --config "$WORK/tls.yaml" --basedir "$WORK/tls" --cores 1 >"$TLOG" 2>&1 &
TAP=$!
PIDS+=("$TAP")
wait_up "http://127.0.0.1:$TMETRICS/healthz"
for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$TPORT/free" && break; sleep 0.2; done

# Buy a token the way a client does: 402 -> pay the invoice at the dev wallet -> retry.
buy() { # path [base-url wallet-port]
  local challenge mac invoice preimage
  challenge=$(curl -sk -D - -o /dev/null "${2:-http://127.0.0.1:$PORT}$1" | tr -d '\r' | grep -i '^Www-Authenticate: L402')
  mac=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$challenge")
  invoice=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$challenge")
  preimage=$(curl -s -X POST "http://127.0.0.1:${3:-$WALLET}/pay" -d "{\"invoice\":\"$invoice\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
  echo "L402 $mac:$preimage"
}
expect() { # status url [header]
  local got
  got=$(curl -sk -o /dev/null -w '%{http_code}' ${3:+-H "$3"} "$2")
  [ "$got" = "$1" ] || { echo "$2 answered $got, expected $1" >&2; exit 1; }
}
PAID_AUTH=$(buy /paid)
GRPC_AUTH=$(buy /soak.Echo/Say)
ABUSE_AUTH=$(buy /abuse.Echo/Say)
GRPC_URL=http://127.0.0.1:$PORT/soak.Echo/Say
expect 200 "http://127.0.0.1:$PORT/paid" "Authorization: $PAID_AUTH"
expect 402 "http://127.0.0.1:$PORT/paid"
printf '\0\0\0\0\0' > "$WORK/grpc.body" # one empty gRPC message
H2=(-c 4 -m 8 -d "$WORK/grpc.body" -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: $GRPC_AUTH")
h2load -n 16 "${H2[@]}" "$GRPC_URL" >"$WORK/h2.check"
grep -q '^status codes: 16 2xx' "$WORK/h2.check" || { cat "$WORK/h2.check" >&2; echo "h2c check failed" >&2; exit 1; }
TLS_BASE=https://127.0.0.1:$TPORT
TPAID_AUTH=$(buy /paid "$TLS_BASE" "$TWALLET")
TABUSE_AUTH=$(buy /abuse.Echo/Say "$TLS_BASE" "$TWALLET")
expect 200 "$TLS_BASE/paid" "Authorization: $TPAID_AUTH"
TLS_H2=(-c 4 -m 8 -H "authorization: $TPAID_AUTH")
h2load -n 16 "${TLS_H2[@]}" "$TLS_BASE/paid" >"$WORK/tls.check"
grep -q '^status codes: 16 2xx' "$WORK/tls.check" && grep -q 'Application protocol: h2' "$WORK/tls.check" \
  || { cat "$WORK/tls.check" >&2; echo "h2 over TLS check failed" >&2; exit 1; }

# wrk script: optional token and delay; tallies status codes and prints them at the end.
cat > "$WORK/soak.lua" <<'LUA'
local auth = os.getenv("SOAK_AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
if os.getenv("SOAK_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
if delay_ms > 0 then function delay() return delay_ms end end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do all[status] = (all[status] or 0) + n end
  end
  for status, n in pairs(all) do io.write(string.format("status %d %d\n", status, n)) end
end
LUA

cat > "$WORK/slowloris.py" <<'PY'
# N connections that send a request line, then one header byte every INTERVAL seconds; a
# connection the proxy closes (or answers) is counted and reopened. Counters go to STATS.
import socket, sys, time, signal
host, port, n, interval, stats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
opened = closed = answered = 0
def write_stats(*_):
    with open(stats, "w") as f:
        f.write(f"{opened} {closed} {answered}\n")
def stop(*_):
    write_stats(); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
TRICKLE = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
def open_one():
    global opened
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET /paid HTTP/1.1\r\nHost: soak\r\n")
    s.setblocking(False)
    opened += 1
    return [s, 0]
conns = [open_one() for _ in range(n)]
while True:
    time.sleep(interval)
    for i, c in enumerate(conns):
        s, pos = c
        alive = True
        try:
            data = s.recv(4096)
            if data:
                answered += 1
            alive = False  # an answer or EOF: the proxy is done with it
        except BlockingIOError:
            pass
        except OSError:
            alive = False
        if alive:
            try:
                s.send(TRICKLE[pos % len(TRICKLE):pos % len(TRICKLE) + 1])
                c[1] = pos + 1
            except OSError:
                alive = False
        if not alive:
            closed += 1
            s.close()
            try:
                conns[i] = open_one()
            except OSError:
                conns[i] = [socket.socket(), 0]
    write_stats()
PY

echo "aperture $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + uncommitted src changes'), --cores $CORES, ${DURATION}s, $(nproc) CPUs, $(uname -r), $(date -u '+%F %T') UTC"
echo "samples: $CSV; proxy logs: $LOG, $TLOG; final /metrics: $METRICS_OUT, $TMETRICS_OUT"

START=$(date +%s)
END=$((START + DURATION))
# (1) paid HTTP/1.1
SOAK_AUTH=$PAID_AUTH wrk -t1 -c16 -d"${DURATION}s" --timeout 10s -s "$WORK/soak.lua" \
  "http://127.0.0.1:$PORT/paid" >"$WORK/wrk.paid" 2>&1 &
PIDS+=($!); W1=$!
# h2load in 30 s runs until the end: h2loop OUT-PREFIX h2load-args...
h2loop() {
  (
    run=
    trap '[ -n "$run" ] && kill "$run" 2>/dev/null; exit 0' TERM # stopped early: stop h2load too
    i=0
    while :; do
      left=$((END - $(date +%s)))
      [ "$left" -ge 2 ] || break
      i=$((i + 1))
      h2load -D $((left < 30 ? left : 30)) "${@:2}" >"$1.$i" 2>&1 &
      run=$!
      wait "$run" || true
    done
  ) &
}
# (2) h2c gRPC-shaped streams
h2loop "$WORK/h2" "${H2[@]}" "$GRPC_URL"
PIDS+=($!); W2=$!
# (3) 402 minting, no token
SOAK_DELAY_MS=200 wrk -t1 -c2 -d"${DURATION}s" --timeout 10s -s "$WORK/soak.lua" \
  "http://127.0.0.1:$PORT/paid" >"$WORK/wrk.402" 2>&1 &
PIDS+=($!); W3=$!
# (4) connection churn: a new connection per request
SOAK_AUTH=$PAID_AUTH SOAK_CLOSE=1 SOAK_DELAY_MS=50 wrk -t1 -c2 -d"${DURATION}s" --timeout 10s \
  -s "$WORK/soak.lua" "http://127.0.0.1:$PORT/paid" >"$WORK/wrk.churn" 2>&1 &
PIDS+=($!); W4=$!
# (5) slowloris
python3 "$WORK/slowloris.py" 127.0.0.1 "$PORT" 20 3 "$WORK/slowloris.stats" &
PIDS+=($!); SLOW=$!
# (6) SIGHUP every 30 s, alternating configs; stops by itself 5 s before the end
(
  n=0
  while [ "$(date +%s)" -lt $((END - 5)) ]; do
    sleep 1
    [ $((($(date +%s) - START) / 30)) -gt "$n" ] || continue
    n=$((n + 1))
    if [ $((n % 2)) = 1 ]; then cp "$WORK/b.yaml" "$WORK/next.yaml"; else cp "$WORK/a.yaml" "$WORK/next.yaml"; fi
    mv "$WORK/next.yaml" "$WORK/aperture.yaml"
    kill -HUP "$AP"
    echo "$n" > "$WORK/hups"
  done
) &
PIDS+=($!); HUP=$!
# (7) h2 over TLS
h2loop "$WORK/tls" "${TLS_H2[@]}" "$TLS_BASE/paid"
PIDS+=($!); W7=$!
# (8) misbehaving h2 clients, h2c and TLS
python3 benches/h2abuse.py 127.0.0.1 "$PORT" 0 soak /paid "$PAID_AUTH" /abuse.Echo/Say "$ABUSE_AUTH" "$WORK/abuse.h2c" 0.05 &
PIDS+=($!); AB1=$!
python3 benches/h2abuse.py 127.0.0.1 "$TPORT" 1 localhost /paid "$TPAID_AUTH" /abuse.Echo/Say "$TABUSE_AUTH" "$WORK/abuse.tls" 0.05 &
PIDS+=($!); AB2=$!

# Sample every 5 s: t=0, 5, ..., DURATION.
echo "t_s,rss_kib,fds,tls_rss_kib,tls_fds" > "$CSV"
for ((t = 0; t <= DURATION; t += 5)); do
  now=$(date +%s)
  [ $((START + t)) -gt "$now" ] && sleep $((START + t - now))
  kill -0 "$AP" 2>/dev/null || { echo "aperture exited during the soak" >&2; break; }
  kill -0 "$TAP" 2>/dev/null || { echo "aperture (TLS) exited during the soak" >&2; break; }
  sample="$t"
  for p in "$AP" "$TAP"; do
    sample+=",$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"),$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
  done
  echo "$sample" >> "$CSV"
done
wait "$W1" "$W2" "$W3" "$W4" "$HUP" "$W7" 2>/dev/null || true
sleep 1
kill -TERM "$SLOW" "$AB1" "$AB2" 2>/dev/null || true
wait "$SLOW" "$AB1" "$AB2" 2>/dev/null || true
AP_ALIVE=0; kill -0 "$AP" 2>/dev/null && AP_ALIVE=1
TAP_ALIVE=0; kill -0 "$TAP" 2>/dev/null && TAP_ALIVE=1
METRICS_TEXT=$(curl -s "http://127.0.0.1:$METRICS/metrics" || true)
echo "$METRICS_TEXT" > "$METRICS_OUT"
TMETRICS_TEXT=$(curl -s "http://127.0.0.1:$TMETRICS/metrics" || true)
echo "$TMETRICS_TEXT" > "$TMETRICS_OUT"
metric() { awk -v m="$1" '$1 == m {s += $2} END {printf "%d", s}' <<<"${2:-$METRICS_TEXT}"; }
metric_prefix() { awk -v m="$1" 'index($1, m) == 1 {s += $2} END {printf "%d", s}' <<<"${2:-$METRICS_TEXT}"; }

# Windows: minute 2 vs the last minute (runs under 3 minutes: second vs last fifth).
if [ "$DURATION" -ge 180 ]; then
  A0=60 A1=120 B0=$((DURATION - 60)) B1=$DURATION LA="minute 2" LB="last minute"
else
  A0=$((DURATION / 5)) A1=$((2 * DURATION / 5)) B0=$((4 * DURATION / 5)) B1=$DURATION
  LA="2nd fifth (${A0}-${A1} s)" LB="last fifth (${B0}-${B1} s)"
fi
mean() { awk -F, -v c="$1" -v a="$2" -v b="$3" 'NR > 1 && $1 >= a && $1 < b {s += $c; n++} END {if (n) printf "%.0f", s / n; else print "nan"}' "$CSV"; }
FAILED=0
# row label result ok: ok is 1 (PASS), 0 (FAIL, and the exit status becomes 1) or info.
row() {
  local v=PASS
  if [ "$3" = info ]; then v=info; elif [ "$3" != 1 ]; then v=FAIL; FAILED=1; fi
  echo "| $1 | $2 | $v |"
}

echo
echo "| metric | $LA | $LB | change % | within 10% |"
echo "|---|---:|---:|---:|---|"
for col in 2:"RSS (KiB)" 3:"open descriptors" 4:"TLS process: RSS (KiB)" 5:"TLS process: open descriptors"; do
  c=${col%%:*} name=${col#*:}
  a=$(mean "$c" "$A0" "$A1") b=$(mean "$c" "$B0" "$B1")
  pct=$(awk -v a="$a" -v b="$b" 'BEGIN {if (a > 0) printf "%+.1f", (b - a) * 100 / a; else print "nan"}')
  ok=$(awk -v p="$pct" 'BEGIN {print (p != "nan" && p <= 10 && p >= -10) ? 1 : 0}')
  row "$name | $a | $b" "$pct" "$ok"
done

# wrk: requests, non-2xx/3xx, socket errors, status tally
wrk_reqs() { awk '/requests in/ {print $1}' "$WORK/wrk.$1"; }
wrk_non2xx() { awk '/Non-2xx/ {n = $5} END {print n + 0}' "$WORK/wrk.$1"; }
wrk_sockerr() { awk '/Socket errors/ {gsub(",", ""); n = $4 + $6 + $8 + $10} END {print n + 0}' "$WORK/wrk.$1"; }
wrk_statuses() { awk '/^status / {printf "%s%s: %s", sep, $2, $3; sep = ", "}' "$WORK/wrk.$1"; }
wrk_other() { # statuses outside the allowed list
  awk -v ok="$2" 'BEGIN {split(ok, a, " "); for (i in a) allow[a[i]] = 1} /^status / && !($2 in allow) {n += $3} END {print n + 0}' "$WORK/wrk.$1"
}
for f in paid 402 churn; do
  [ -s "$WORK/wrk.$f" ] && grep -q 'requests in' "$WORK/wrk.$f" || { echo "wrk $f produced no summary:" >&2; cat "$WORK/wrk.$f" >&2; FAILED=1; }
done
# h2load: sum over the runs of one loop: h2sum OUT-PREFIX
h2sum() {
  H2_RUNS=0 H2_REQ=0 H2_OK=0 H2_FAIL=0 H2_ERR=0 H2_TO=0 H2_5XX=0 H2_NON2XX=0
  local f line total ok fail err to s2 s3 s4 s5
  for f in "$1".[0-9]*; do
    [ -e "$f" ] || continue
    line=$(grep '^requests:' "$f" || true)
    [ -n "$line" ] || { echo "h2load run $f produced no summary:" >&2; cat "$f" >&2; FAILED=1; continue; }
    read -r total ok fail err to <<<"$(awk '{print $2, $8, $10, $12, $14}' <<<"$line")"
    read -r s2 s3 s4 s5 <<<"$(awk '/^status codes:/ {print $3, $5, $7, $9}' "$f")"
    H2_RUNS=$((H2_RUNS + 1)) H2_REQ=$((H2_REQ + total)) H2_OK=$((H2_OK + ok)) H2_FAIL=$((H2_FAIL + fail))
    H2_ERR=$((H2_ERR + err)) H2_TO=$((H2_TO + to)) H2_5XX=$((H2_5XX + s5)) H2_NON2XX=$((H2_NON2XX + s3 + s4 + s5))
  done
}
h2sum "$WORK/tls"
TLS_SUM="$H2_RUNS / $H2_REQ / $H2_OK / $H2_FAIL / $H2_ERR / $H2_TO / $H2_NON2XX ($H2_5XX)"
TLS_OK=$([ $H2_RUNS -gt 0 ] && [ $((H2_FAIL + H2_ERR + H2_TO + H2_NON2XX)) = 0 ] && echo 1 || echo 0)
h2sum "$WORK/h2"
# The misbehaving clients' counters: "connections / connect failures / response heads / resets
# and GOAWAYs by scenario:code".
abuse() {
  python3 - "$1" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("no stats / - / - / -"); sys.exit()
codes = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"
print(f"{s['connections']} / {s['connect_failures']} / {s['responses']} / RST {codes(s['rst_from_proxy'])}; GOAWAY {codes(s['goaway'])}")
PY
}
abuse_ok() { # connections made, none failed to connect (or to negotiate h2)
  python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(1 if s["connections"] > 0 and s["connect_failures"] == 0 else 0)' "$1" 2>/dev/null || echo 0
}
SLOW_STATS=$(cat "$WORK/slowloris.stats" 2>/dev/null || echo "0 0 0")
read -r SL_OPEN SL_CLOSED SL_ANSWERED <<<"$SLOW_STATS"
HUPS=$(cat "$WORK/hups" 2>/dev/null || echo 0)
RELOADS=$(grep -c 'SIGHUP: configuration reloaded' "$LOG" || true)
RELOAD_FAIL=$(grep -c 'SIGHUP: reload of' "$LOG" || true)
PANIC_LOG=$(cat "$LOG" "$TLOG" | grep -ci panic || true)
PANIC_METRIC=$(($(metric aperture_connection_panics_total) + $(metric aperture_connection_panics_total "$TMETRICS_TEXT")))
ERROR_LOG=$(cat "$LOG" "$TLOG" | grep -c ' ERROR ' || true)

echo
echo "| check | result | pass |"
echo "|---|---|---|"
row "proxy alive at the end (h2c / TLS process)" \
  "$([ $AP_ALIVE = 1 ] && echo yes || echo no) / $([ $TAP_ALIVE = 1 ] && echo yes || echo no)" \
  "$([ $AP_ALIVE = 1 ] && [ $TAP_ALIVE = 1 ] && echo 1 || echo 0)"
row "(1) paid HTTP/1.1: requests / non-2xx / socket errors" \
  "$(wrk_reqs paid) / $(wrk_non2xx paid) / $(wrk_sockerr paid)" \
  "$([ "$(wrk_non2xx paid)" = 0 ] && [ "$(wrk_sockerr paid)" = 0 ] && echo 1 || echo 0)"
row "(2) h2c gRPC: runs / requests / succeeded / failed / errored / timeout / non-2xx (5xx)" \
  "$H2_RUNS / $H2_REQ / $H2_OK / $H2_FAIL / $H2_ERR / $H2_TO / $H2_NON2XX ($H2_5XX)" \
  "$([ $H2_RUNS -gt 0 ] && [ $((H2_FAIL + H2_ERR + H2_TO + H2_NON2XX)) = 0 ] && echo 1 || echo 0)"
# A gRPC request's synthetic errors are Trailers-Only (HTTP 200, grpc-status != 0): h2load counts
# them as 2xx, so the proxy's own count of the service's 5xx answers is the check.
GRPC_5XX=$(metric 'aperture_service_requests_total{service="grpc",class="5xx"}')
GRPC_UPERR=$(metric 'aperture_upstream_errors_total{service="grpc"}')
row "(2) h2c gRPC, proxy side: service grpc answers 5xx (gRPC errors as HTTP 200) / upstream errors" \
  "$GRPC_5XX / $GRPC_UPERR" \
  "$([ "$GRPC_5XX" = 0 ] && [ "$GRPC_UPERR" = 0 ] && echo 1 || echo 0)"
row "(3) 402 minting: requests / statuses (only 402, 429, 503 allowed) / socket errors" \
  "$(wrk_reqs 402) / $(wrk_statuses 402) / $(wrk_sockerr 402)" \
  "$([ "$(wrk_other 402 "402 429 503")" = 0 ] && [ "$(wrk_sockerr 402)" = 0 ] && [ "$(wrk_reqs 402)" -gt 0 ] && echo 1 || echo 0)"
row "(4) churn (Connection: close): requests / statuses / socket errors" \
  "$(wrk_reqs churn) / $(wrk_statuses churn) / $(wrk_sockerr churn)" \
  "$([ "$(wrk_other churn "200")" = 0 ] && [ "$(wrk_sockerr churn)" = 0 ] && [ "$(wrk_reqs churn)" -gt 0 ] && echo 1 || echo 0)"
row "(7) h2 over TLS: runs / requests / succeeded / failed / errored / timeout / non-2xx (5xx)" \
  "$TLS_SUM" "$TLS_OK"
TLS_5XX=$(metric 'aperture_service_requests_total{service="paid",class="5xx"}' "$TMETRICS_TEXT")
TLS_UPERR=$(metric 'aperture_upstream_errors_total{service="paid"}' "$TMETRICS_TEXT")
row "(7) TLS process, proxy side: service paid answers 5xx / upstream errors" \
  "$TLS_5XX / $TLS_UPERR" \
  "$([ "$TLS_5XX" = 0 ] && [ "$TLS_UPERR" = 0 ] && echo 1 || echo 0)"
row "(8) misbehaving h2c client: connections / connect failures / response heads / proxy's RST_STREAM and GOAWAY codes by scenario" \
  "$(abuse "$WORK/abuse.h2c")" "$(abuse_ok "$WORK/abuse.h2c")"
row "(8) misbehaving h2 (TLS) client: the same" \
  "$(abuse "$WORK/abuse.tls")" "$(abuse_ok "$WORK/abuse.tls")"
# A client leaving is a client abort, never an upstream error (nor a 5xx) of the service.
AB_5XX=$(metric 'aperture_service_requests_total{service="abuse",class="5xx"}') AB_UP=$(metric 'aperture_upstream_errors_total{service="abuse"}')
TAB_5XX=$(metric 'aperture_service_requests_total{service="abuse",class="5xx"}' "$TMETRICS_TEXT") TAB_UP=$(metric 'aperture_upstream_errors_total{service="abuse"}' "$TMETRICS_TEXT")
row "(8) service abuse, proxy side: 5xx / upstream errors (h2c process; TLS process), and the client aborts counted" \
  "$AB_5XX / $AB_UP; $TAB_5XX / $TAB_UP; client aborts $(metric aperture_client_aborts_total) / $(metric aperture_client_aborts_total "$TMETRICS_TEXT")" \
  "$([ $((AB_5XX + AB_UP + TAB_5XX + TAB_UP)) = 0 ] && echo 1 || echo 0)"
echo "| (5) slowloris: connections opened / closed by the proxy / answered before closing | $SL_OPEN / $SL_CLOSED / $SL_ANSWERED | info |"
row "(6) SIGHUPs sent / reloads logged / reloads failed" \
  "$HUPS / $RELOADS / $RELOAD_FAIL" \
  "$([ "$RELOADS" = "$HUPS" ] && [ "$RELOAD_FAIL" = 0 ] && echo 1 || echo 0)"
row "panics (both processes): log lines with \"panic\" / aperture_connection_panics_total" \
  "$PANIC_LOG / $PANIC_METRIC" \
  "$([ "$PANIC_LOG" = 0 ] && [ "$PANIC_METRIC" = 0 ] && echo 1 || echo 0)"
row "proxy's own counts: responses 2xx / 4xx / 5xx, challenges minted, tokens accepted / rejected (must be 0), upstream errors" \
  "$(metric 'aperture_responses_total{class="2xx"}') / $(metric 'aperture_responses_total{class="4xx"}') / $(metric 'aperture_responses_total{class="5xx"}'), $(metric_prefix aperture_challenges_minted_total), $(metric_prefix aperture_tokens_accepted_total) / $(metric_prefix aperture_tokens_rejected_total), $(metric_prefix aperture_upstream_errors_total)" \
  "$([ "$(metric_prefix aperture_tokens_rejected_total)" = 0 ] && echo 1 || echo 0)"
echo "| ERROR lines in the proxy logs (both processes) | $ERROR_LOG | info |"
if [ "$ERROR_LOG" != 0 ] || [ "$PANIC_LOG" != 0 ]; then
  echo
  echo "first ERROR / panic lines of the proxy logs:"
  grep -i ' ERROR \|panic' "$LOG" "$TLOG" | head -20
fi
[ $FAILED = 0 ] && echo && echo "soak: PASS" || { echo; echo "soak: FAIL"; }
exit $FAILED
