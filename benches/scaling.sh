#!/usr/bin/env bash
# Multi-core scaling: `aperture --cores N` against nginx with `worker_processes N`, both in front
# of the same nginx origin, for N in a list (default 1 2 4 8). Meant for a machine with many
# CPUs (16 or more): the proxy under test gets the first N CPUs (one per physical core first),
# the origin and the load generator (wrk) get CPUs the proxy never uses.
#
#   benches/scaling.sh [--cores "1 2 4 8"] [--duration SECONDS] [--bin PATH]
#
# Needs wrk, nginx, python3 and taskset on PATH (it installs wrk and nginx with apt when they
# are missing and apt works). Prints, per N and target: req/s, p99, the proxy's CPU time per
# request, how busy its N CPUs were, and the speed-up over N = 1. The free service has
# `auth: off`; the paid service verifies an L402 token on every request (one token for all
# connections); the 402 row mints a challenge per request (one bridge thread signs every
# invoice, so it does not scale with N). No rate limits are configured, so connections are spread by the kernel's
# SO_REUSEPORT hash (client-address steering only applies with IP-keyed limits).
# Everything it starts is stopped on exit; nothing leaves loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

CORES_LIST="1 2 4 8" DURATION=8 BIN="" SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cores) CORES_LIST=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;; # run on a small machine anyway (CPUs shared: figures meaningless)
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/aperture
fi

MAX_N=0
for n in $CORES_LIST; do [ "$n" -gt "$MAX_N" ] && MAX_N=$n; done

# CPUs ordered so that distinct physical cores come first (hyperthread siblings last).
mapfile -t ORDER < <(python3 - <<'PY'
import glob, os
cpus = []
for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*"):
    cpu = int(os.path.basename(path)[3:])
    if cpu not in os.sched_getaffinity(0):
        continue
    try:
        sib = open(path + "/topology/thread_siblings_list").read().strip()
        first = int(sib.replace("-", ",").split(",")[0])
    except OSError:
        first = cpu
    cpus.append((cpu != first, cpu))
for _, cpu in sorted(cpus):
    print(cpu)
PY
)
NCPU=${#ORDER[@]}
join() { local IFS=,; echo "$*"; }
if [ "$NCPU" -ge $((MAX_N + 4)) ]; then
  ORIGIN_N=$(( (NCPU - MAX_N) / 2 )); [ "$ORIGIN_N" -gt 4 ] && ORIGIN_N=4
  ORIGIN_CPUS=$(join "${ORDER[@]:MAX_N:ORIGIN_N}")
  WRK_CPUS=$(join "${ORDER[@]:MAX_N+ORIGIN_N}")
  WRK_THREADS=$((NCPU - MAX_N - ORIGIN_N))
elif [ "$SMOKE" = 1 ]; then
  ORIGIN_N=1 ORIGIN_CPUS=${ORDER[-1]} WRK_CPUS=${ORDER[-1]} WRK_THREADS=1
else
  echo "need at least $((MAX_N + 4)) CPUs for --cores up to $MAX_N (have $NCPU)" >&2
  exit 2
fi
proxy_cpus() { join "${ORDER[@]:0:$1}"; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

nginx_start() { # name workers cpus server-block
  cat > "$WORK/$1.conf" <<NGINX
worker_processes $2;
daemon on;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy;
  upstream origin { server 127.0.0.1:18080; keepalive 256; }
  $4
}
NGINX
  taskset -c "$3" nginx -e "$WORK/$1-error.log" -c "$WORK/$1.conf" -p "$WORK"
}
wait_http() { # url
  for _ in $(seq 200); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" \
      2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
nginx_start origin "$ORIGIN_N" "$ORIGIN_CPUS" \
  'server { listen 127.0.0.1:18080 reuseport backlog=4096; location / { return 200 "hello origin\n"; } }'
wait_http http://127.0.0.1:18080/

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
  - name: paid
    hostregexp: ".*"
    address: "127.0.0.1:18080"
    protocol: http
    price: 10
YAML

APID=""
aperture_start() { # cores
  taskset -c "$(proxy_cpus "$1")" "$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" \
    --cores "$1" 2>>"$WORK/aperture.log" &
  APID=$!
  PIDS+=("$APID")
  wait_http http://127.0.0.1:18082/free
}
aperture_stop() { kill "$APID"; wait "$APID" 2>/dev/null || true; }

# Buy one token the way a client does: 402 -> pay at the dev wallet -> retry.
buy() {
  python3 - <<'PY'
import json, re, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:18082/paid", timeout=5)
    raise SystemExit("expected 402")
except urllib.error.HTTPError as e:
    assert e.code == 402, e.code
    ch = [v for v in e.headers.get_all("WWW-Authenticate") if v.startswith("L402")][0]
mac = re.search(r'macaroon="([^"]+)"', ch).group(1)
inv = re.search(r'invoice="([^"]+)"', ch).group(1)
req = urllib.request.Request("http://127.0.0.1:18089/pay", data=json.dumps({"invoice": inv}).encode())
pre = json.load(urllib.request.urlopen(req, timeout=5))["preimage"]
auth = f"L402 {mac}:{pre}"
ok = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18082/paid", headers={"Authorization": auth}), timeout=5)
assert ok.status == 200
print(auth)
PY
}

cpu_ticks() { # pids... -> summed utime+stime of every thread
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
TICK=$(getconf CLK_TCK)
declare -A BASE

run() { # n name url lua pids...
  local n=$1 name=$2 url=$3 lua=$4; shift 4
  local conns=$((64 * n)); [ "$conns" -gt 512 ] && conns=512
  [ "$conns" -lt "$WRK_THREADS" ] && conns=$WRK_THREADS
  # A short warm-up so pools and caches are filled, then the measured run.
  taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$conns" -d1s ${lua:+-s "$lua"} "$url" >/dev/null
  local before after out reqs rps p99 non2xx
  before=$(cpu_ticks "$@")
  out=$(taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency ${lua:+-s "$lua"} "$url")
  after=$(cpu_ticks "$@")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  local us busy speedup
  us=$(awk -v t=$((after - before)) -v hz="$TICK" -v r="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }')
  busy=$(awk -v t=$((after - before)) -v hz="$TICK" -v d="$DURATION" -v n="$n" 'BEGIN { printf "%.0f%%", 100 * t / hz / d / n }')
  [ "$n" = 1 ] && BASE[$name]=$rps
  speedup=$(awk -v a="$rps" -v b="${BASE[$name]:-$rps}" 'BEGIN { printf "%.2f×", a / b }')
  printf "| %2s | %-20s | %10s | %8s | %8s | %6s | %7s | %s |\n" \
    "$n" "$name" "$rps" "$p99" "$us" "$busy" "$speedup" "${non2xx:-0}"
}

echo "machine: $NCPU CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
echo "proxy CPUs (first N of): $(join "${ORDER[@]:0:MAX_N}"); origin nginx ($ORIGIN_N workers): $ORIGIN_CPUS; wrk -t$WRK_THREADS: $WRK_CPUS"
echo "wrk -c 64×N (≤512) -d${DURATION}s after a 1 s warm-up; CPU = the proxy's own processes (all threads)"
echo
echo "| N  | target               |      req/s |      p99 | CPU µs/req | busy | vs N=1 | non-2xx |"
echo "|---:|----------------------|-----------:|---------:|-----------:|-----:|-------:|--------:|"
# The origin's own ceiling (no proxy), so a row near it is read as origin-bound.
ORIGIN_PIDS=$(pgrep -P "$(cat "$WORK/origin.pid")" | tr '\n' ' ')
# shellcheck disable=SC2086
run "$ORIGIN_N" "origin direct" http://127.0.0.1:18080/ "" $ORIGIN_PIDS
AUTH=""
for n in $CORES_LIST; do
  nginx_start "proxy$n" "$n" "$(proxy_cpus "$n")" \
    'server { listen 127.0.0.1:18081 reuseport backlog=4096; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } }'
  wait_http http://127.0.0.1:18081/
  mapfile -t WORKERS < <(pgrep -P "$(cat "$WORK/proxy$n.pid")")
  run "$n" "nginx proxy_pass" http://127.0.0.1:18081/ "" "${WORKERS[@]}"
  kill "$(cat "$WORK/proxy$n.pid")"; rm -f "$WORK/proxy$n.pid"
  for _ in $(seq 100); do pgrep -f "$WORK/proxy$n.conf" >/dev/null || break; sleep 0.05; done

  aperture_start "$n"
  [ -z "$AUTH" ] && AUTH=$(buy)
  run "$n" "aperture free" http://127.0.0.1:18082/free "" "$APID"
  export L402_AUTH=$AUTH
  run "$n" "aperture paid (L402)" http://127.0.0.1:18082/paid benches/wrk/paid.lua "$APID"
  # Every request mints a challenge: a BOLT11 invoice signed on the one bridge thread.
  run "$n" "aperture 402 challenge" http://127.0.0.1:18082/paid "" "$APID"
  aperture_stop
done
echo
echo "busy = the proxy's CPU time / (duration × N): near 100% means its N CPUs were saturated,"
echo "well below means the load generator or the origin was the limit for that row."
