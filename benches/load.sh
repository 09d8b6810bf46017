#!/usr/bin/env bash
# aperture against nginx in front of the same origin, on loopback: the one load script.
#
#   benches/load.sh [--duration SECONDS] [--requests N] [--connections C]
#                   [--skip-concurrent] [--skip-instructions] [--skip-sequential] [--no-mpp]
#                   [--ratelimit none|local|redis] [--epoll]
#
# On a fresh Debian machine it installs what is missing (wrk, nginx-light, nghttp2-client,
# valgrind), builds aperture (release), and starts:
#   - the origin: nginx, one process, a fixed 13-byte answer, on 127.0.0.1:18580;
#   - nginx as a plain reverse proxy (proxy_pass, upstream keep-alive, no auth): HTTP/1.1 on :18581
#     and an h2c listener (`listen ... http2`, prior knowledge) on :18583;
#   - three `aperture --cores 1` processes (dev Lightning backend, services `/free` with auth off
#     and everything else priced) on :18582 (paid), :18584 (402), :18586 (free), so that each
#     traffic class has a process of its own whose CPU time can be read. The Payment scheme
#     (charge and sessions) is on, so every 402 also mints a charge and a session deposit
#     invoice; `--no-mpp` turns it off (to compare with builds from before it).
#   - with `--ratelimit local` every service gets one rate limit that never denies (10^9 per
#     second), decided per instance; `--ratelimit redis` the same rule fleet-wide
#     (`ratelimitbackend: redis`) through a redis-server (Debian's) on 127.0.0.1:18588, on the
#     proxies' CPU. The default `none` has no rule.
# It buys one L402 token through the real 402 -> pay -> retry flow, then prints three tables:
#   (a) concurrent CPU per request: every proxy under load at the same moment, one wrk each (all
#       pinned to the last CPU; proxies and origin on CPU 0), CPU time of each proxy process
#       (utime + stime from /proc/PID/stat) over the requests wrk counted, as a ratio to nginx's;
#   (b) user-space instructions per request under callgrind: 200 requests of warm-up, counters
#       zeroed (callgrind_control -z), N requests with h2load over 8 keep-alive connections,
#       dumped (callgrind_control -d): the dump's total is the count between the two
#       boundaries. HTTP/1.1 for nginx and aperture paid / free / 402, HTTP/2 (h2c, 8
#       connections x 1 stream) for nginx's h2c listener and aperture paid. aperture runs on
#       the driver users get, io_uring (where the kernel allows it; the row names the driver
#       measured), or on monoio's epoll driver with --epoll (MONOIO_FORCE_LEGACY_DRIVER=1), to
#       compare. Valgrind 3.19 does not treat io_uring_enter as blocking, so a worker waiting
#       in it keeps valgrind's thread lock: the process ignores SIGTERM (it is SIGKILLed after
#       its last dump) and its Lightning bridge thread runs only while the worker runs code, so
#       the token is bought from a plain aperture with the same master secret and the 402 row
#       (it waits on the bridge) is measured on the epoll driver either way;
#   (c) sequential: one wrk at a time, req/s and p99, against nginx.
# Bounded in time (about 6 x DURATION plus a minute of valgrind), loopback only; every process
# it starts is stopped on exit (trap), killed if it does not stop within 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10 N=5000 CONNS=32 CONCURRENT=1 INSTRUCTIONS=1 SEQUENTIAL=1 MPP=1 RATELIMIT=none EPOLL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --skip-concurrent) CONCURRENT=0; shift ;;
    --skip-instructions) INSTRUCTIONS=0; shift ;;
    --skip-sequential) SEQUENTIAL=0; shift ;;
    --no-mpp) MPP=0; shift ;;
    --epoll) EPOLL=1; shift ;;
    --ratelimit) RATELIMIT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need wrk || missing+=(wrk)
need nginx || missing+=(nginx-light)
need h2load || missing+=(nghttp2-client)
{ need valgrind && need callgrind_control; } || missing+=(valgrind)
need curl || missing+=(curl)
need taskset || missing+=(util-linux)
case "$RATELIMIT" in
  none|local) ;;
  redis) need redis-server || missing+=(redis-server) ;;
  *) echo "--ratelimit takes none, local or redis" >&2; exit 2 ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
BIN=$PWD/target/release/aperture

WORK=$(mktemp -d)
PIDS=() VG_PIDS=()
cleanup() {
  # A valgrind'ed io_uring process ignores SIGTERM (see (b)); its counts are dumped already.
  for p in "${VG_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # KEEP_CALLGRIND=DIR keeps the callgrind profiles (callgrind_annotate, A/B diffs).
  if [ -n "${KEEP_CALLGRIND:-}" ]; then
    mkdir -p "$KEEP_CALLGRIND" && cp "$WORK"/callgrind.out.* "$KEEP_CALLGRIND"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

NCPU=$(nproc)
PROXY_CPU=0
LOAD_CPU=$((NCPU - 1))
pin() { if [ "$NCPU" -gt 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
# spawn CPU cmd...: in the background, pid (taskset execs the command) in LAST and in PIDS.
spawn() {
  if [ "$NCPU" -gt 1 ]; then taskset -c "$1" "${@:2}" & else "${@:2}" & fi
  LAST=$!
  PIDS+=("$LAST")
}
wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "$1 never answered" >&2; return 1; }

# nginx in the foreground as one process (no master), so $! is the process doing the work.
nginx_conf() { # name http-block-body
  cat > "$WORK/$1.conf" <<NGINX
worker_processes 1; daemon off; master_process off;
pid $WORK/$1.pid; error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:18580; keepalive 64; }
  $2
}
NGINX
}
PROXY_LOCATION='location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }'
nginx_conf origin 'server { listen 127.0.0.1:18580; location / { return 200 "hello origin\n"; } }'
nginx_conf proxy "server { listen 127.0.0.1:18581; $PROXY_LOCATION }
  server { listen 127.0.0.1:18583 http2; $PROXY_LOCATION }"
spawn "$PROXY_CPU" nginx -c "$WORK/origin.conf" -p "$WORK" >/dev/null
wait_up http://127.0.0.1:18580/

MPP_KEYS=""
if [ $MPP = 1 ]; then
  MPP_KEYS=$'  enablempp: true\n  enablesessions: true\n'
fi
RL_RULE="" RL_TOP=""
if [ "$RATELIMIT" != none ]; then
  RL_RULE=$'    ratelimits:\n      - requests: 1000000000\n        per: 1s\n        burst: 1000000000\n'
fi
if [ "$RATELIMIT" = redis ]; then
  RL_TOP=$'ratelimitbackend: redis\nredis:\n  address: "127.0.0.1:18588"\n'
  spawn "$PROXY_CPU" redis-server --port 18588 --bind 127.0.0.1 --save "" --appendonly no >/dev/null
  for _ in $(seq 100); do redis-cli -p 18588 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
aperture_conf() { # name port wallet-port
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:$2"
insecure: true
dbbackend: sqlite
${RL_TOP}sqlite:
  databasefilename: "$WORK/$1/aperture.db"
debuglevel: warn
authenticator:
  network: regtest
$MPP_KEYS  dev:
    listenaddr: "127.0.0.1:$3"
services:
  - name: free
    hostregexp: ".*"
    pathregexp: "^/free"
    address: "127.0.0.1:18580"
    protocol: http
    auth: "off"
${RL_RULE}  - name: paid
    hostregexp: ".*"
    address: "127.0.0.1:18580"
    protocol: http
    price: 10
${RL_RULE}
YAML
}
aperture_conf paid 18582 18592
aperture_conf challenge 18584 18594
aperture_conf free 18586 18596
# One master secret for all, so the token bought from one verifies everywhere.
head -c 32 /dev/urandom > "$WORK/paid/master.secret"
chmod 600 "$WORK/paid/master.secret"
cp -p "$WORK/paid/master.secret" "$WORK/challenge/" && cp -p "$WORK/paid/master.secret" "$WORK/free/"
start_aperture() { # name: started on the proxy CPU (its worker pins itself there); pid in LAST
  spawn "$PROXY_CPU" "$BIN" --config "$WORK/$1/aperture.yaml" --basedir "$WORK/$1" --cores 1 \
    2>"$WORK/$1.log" >/dev/null
}

# Buy a token the way a client does: 402 -> pay the invoice at the dev wallet -> retry.
buy() { # port wallet-port
  local challenge mac invoice preimage
  challenge=$(curl -s -D - -o /dev/null "http://127.0.0.1:$1/paid" | tr -d '\r' | grep '^Www-Authenticate: L402')
  mac=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$challenge")
  invoice=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$challenge")
  preimage=$(curl -s -X POST "http://127.0.0.1:$2/pay" -d "{\"invoice\":\"$invoice\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
  echo "L402 $mac:$preimage"
}
expect() { # status url [header]
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' ${3:+-H "$3"} "$2")
  [ "$got" = "$1" ] || { echo "$2 answered $got, expected $1" >&2; exit 1; }
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
MACHINE="$NCPU CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r)"
echo "machine: $MACHINE; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'); $(date -u +%F)"
echo "command: benches/load.sh --duration $DURATION --requests $N --connections $CONNS --ratelimit $RATELIMIT$([ $EPOLL = 1 ] && echo ' --epoll')"

WRK="$WORK/wrk.lua"
cp benches/wrk/paid.lua "$WRK"
# wrk_run name url [auth]: one pinned wrk; output in $WORK/wrk.name
wrk_run() {
  L402_AUTH=${3:-} pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency ${3:+-s "$WRK"} "$2" >"$WORK/wrk.$1"
}
wrk_reqs() { awk '/requests in/ {print $1}' "$WORK/wrk.$1"; }
wrk_rps() { awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/wrk.$1"; }
wrk_p99() { awk '$1 == "99%" {print $2}' "$WORK/wrk.$1"; }
wrk_non2xx() { awk '/Non-2xx/ {print $5}' "$WORK/wrk.$1"; }
us_per_req() { awk -v t="$1" -v hz="$TICK" -v n="$2" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

if [ $CONCURRENT = 1 ] || [ $SEQUENTIAL = 1 ]; then
  spawn "$PROXY_CPU" nginx -c "$WORK/proxy.conf" -p "$WORK" >/dev/null; NGINX=$LAST
  start_aperture paid; PAID=$LAST
  start_aperture challenge; CHAL=$LAST
  start_aperture free; FREE=$LAST
  wait_up http://127.0.0.1:18581/; wait_up http://127.0.0.1:18582/free
  wait_up http://127.0.0.1:18584/free; wait_up http://127.0.0.1:18586/free
  AUTH=$(buy 18582 18592)
  expect 200 http://127.0.0.1:18582/paid "Authorization: $AUTH"
  expect 402 http://127.0.0.1:18584/paid
  expect 200 http://127.0.0.1:18586/free
  NAMES=(nginx paid 402 free)
  declare -A URL=([nginx]=http://127.0.0.1:18581/ [paid]=http://127.0.0.1:18582/paid
    [402]=http://127.0.0.1:18584/paid [free]=http://127.0.0.1:18586/free)
  declare -A PID=([nginx]=$NGINX [paid]=$PAID [402]=$CHAL [free]=$FREE)
  declare -A TOKEN=([paid]=$AUTH)
  declare -A LABEL=([nginx]="nginx proxy_pass" [paid]="aperture paid L402" [402]="aperture 402 (dev backend)" [free]="aperture free (auth off)")
fi

if [ $CONCURRENT = 1 ]; then
  declare -A BEFORE AFTER
  for n in "${NAMES[@]}"; do BEFORE[$n]=$(cpu_ticks "${PID[$n]}"); done
  WRKS=()
  for n in "${NAMES[@]}"; do wrk_run "c$n" "${URL[$n]}" "${TOKEN[$n]:-}" & WRKS+=($!); done
  wait "${WRKS[@]}"
  for n in "${NAMES[@]}"; do AFTER[$n]=$(cpu_ticks "${PID[$n]}"); done
  echo
  echo "(a) concurrent: all four under load at once for ${DURATION}s, one wrk -t1 -c$CONNS each on CPU $LOAD_CPU, proxies + origin on CPU $PROXY_CPU"
  echo
  echo "| target | requests | CPU µs / req | vs nginx |"
  echo "|---|---:|---:|---:|"
  NGINX_US=$(us_per_req $((AFTER[nginx] - BEFORE[nginx])) "$(wrk_reqs cnginx)")
  for n in "${NAMES[@]}"; do
    us=$(us_per_req $((AFTER[$n] - BEFORE[$n])) "$(wrk_reqs "c$n")")
    echo "| ${LABEL[$n]} | $(wrk_reqs "c$n") | $us | $(ratio "$us" "$NGINX_US")× |"
  done
fi

if [ $SEQUENTIAL = 1 ]; then
  echo
  echo "(c) sequential: one wrk -t1 -c$CONNS -d${DURATION}s at a time on CPU $LOAD_CPU"
  echo
  echo "| target | req/s | vs nginx | p99 | CPU µs / req | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|"
  for n in "${NAMES[@]}"; do
    before=$(cpu_ticks "${PID[$n]}")
    wrk_run "s$n" "${URL[$n]}" "${TOKEN[$n]:-}"
    after=$(cpu_ticks "${PID[$n]}")
    [ "$n" = nginx ] && NGINX_RPS=$(wrk_rps snginx)
    echo "| ${LABEL[$n]} | $(wrk_rps "s$n") | $(ratio "$(wrk_rps "s$n")" "$NGINX_RPS")× | $(wrk_p99 "s$n") | $(us_per_req $((after - before)) "$(wrk_reqs "s$n")") | $(wrk_non2xx "s$n") |"
  done
  echo "(the 402 row's answers are all non-2xx: each is a fresh invoice + macaroon)"
fi

if [ $CONCURRENT = 1 ] || [ $SEQUENTIAL = 1 ]; then
  for p in "$NGINX" "$PAID" "$CHAL" "$FREE"; do kill "$p"; done
  wait "$NGINX" "$PAID" "$CHAL" "$FREE" 2>/dev/null || true
fi

if [ $INSTRUCTIONS = 1 ]; then
  # Instructions per request: warm up, zero the counters, send n requests, dump: the dump's
  # total is the difference between the two boundaries. Valgrind 3.19 does not treat
  # io_uring_enter as a blocking call, so an io_uring worker waiting in it keeps valgrind's
  # thread lock: it ignores SIGTERM, and the process's other threads (the Lightning bridge)
  # run only while the worker runs code. Hence: callgrind_control (vgdb) interrupts the wait to
  # zero and dump, an idle process is nudged with one request so the dump happens, every
  # valgrind'ed process is SIGKILLed after its last dump (its counts are on disk by then), the
  # token is bought from a plain (not valgrind'ed) aperture with the same master secret, and the
  # 402 row (it waits on the bridge for an invoice) runs on the epoll driver.
  DUMPS=0
  measure() { # label pid nudge-url n status-class h2load-args...
    local label=$1 pid=$2 nudge=$3 n=$4 class=$5 out ir
    shift
    DUMPS=$((DUMPS + 1))
    h2load "${@:5}" -n 200 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    out=$(h2load "${@:5}" -n "$n")
    grep -Eq "^status codes: .*\b$n $class" <<<"$out" \
      || { echo "$label: $(grep -E '^(requests|status codes):' <<<"$out")" >&2; exit 1; }
    callgrind_control -d "run$DUMPS" "$pid" >/dev/null 2>&1 &
    local ctl=$!
    # The dump happens when the process next runs code: nudge it if it is idle.
    sleep 0.5; kill -0 "$ctl" 2>/dev/null && { curl -s -o /dev/null "$nudge" || true; }
    wait "$ctl" || true
    ir=$(grep -l "^desc: Trigger: dump run$DUMPS\$" "$WORK"/callgrind.out.* | head -1 | xargs grep -h '^totals:' | awk '{print $2}')
    echo "| $label | $n | $((ir / n)) |"
  }
  # vg_aperture [legacy]: the paid instance under callgrind, pid in VAP, driver in VDRIVER.
  vg_aperture() {
    (cd "$WORK" && if [ -n "${1:-}" ]; then export MONOIO_FORCE_LEGACY_DRIVER=1; fi
      exec valgrind --tool=callgrind \
      --callgrind-out-file="$WORK/callgrind.out.%p" "$BIN" --config "$WORK/paid/aperture.yaml" \
      --basedir "$WORK/paid" --cores 1 --no-pin 2>>"$WORK/valgrind-aperture.log") & VAP=$!
    PIDS+=("$VAP"); VG_PIDS+=("$VAP")
    wait_up http://127.0.0.1:18582/free
    # The worker's ring shows as an io_uring descriptor (FusionDriver falls back to epoll where
    # the kernel refuses io_uring).
    VDRIVER=epoll
    if find "/proc/$VAP/fd" -lname '*io_uring*' 2>/dev/null | grep -q .; then VDRIVER=io_uring; fi
  }
  H1=(--h1 -c 8)
  H2=(-c 8 -m 1)
  echo
  echo "(b) user-space instructions per request (callgrind; $N requests after 200 of warm-up; 8 keep-alive connections; HTTP/2: h2c prior knowledge, 1 stream per connection)"
  echo
  echo "| target | requests | instructions / req |"
  echo "|---|---:|---:|"
  (cd "$WORK" && exec valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    nginx -c "$WORK/proxy.conf" -p "$WORK" 2>/dev/null) & VNGINX=$!; PIDS+=("$VNGINX"); VG_PIDS+=("$VNGINX")
  wait_up http://127.0.0.1:18581/
  NUDGE=http://127.0.0.1:18581/
  measure "nginx proxy_pass, HTTP/1.1" "$VNGINX" $NUDGE "$N" 2xx "${H1[@]}" http://127.0.0.1:18581/
  measure "nginx proxy_pass, h2c" "$VNGINX" $NUDGE "$N" 2xx "${H2[@]}" http://127.0.0.1:18583/
  kill -9 "$VNGINX"; wait "$VNGINX" 2>/dev/null || true
  # The token, bought the way a client buys it from a plain instance with the same secret.
  start_aperture challenge; BUYER=$LAST
  wait_up http://127.0.0.1:18584/free
  AUTH=$(buy 18584 18594)
  expect 200 http://127.0.0.1:18584/paid "Authorization: $AUTH"
  kill "$BUYER"; wait "$BUYER" 2>/dev/null || true
  if [ $EPOLL = 1 ]; then vg_aperture legacy; else vg_aperture; fi
  [ $EPOLL = 1 ] || [ $VDRIVER = io_uring ] || echo "(io_uring unavailable here: aperture measured on epoll)"
  expect 200 http://127.0.0.1:18582/paid "Authorization: $AUTH"
  NUDGE=http://127.0.0.1:18582/free
  measure "aperture paid L402, HTTP/1.1 ($VDRIVER)" "$VAP" $NUDGE "$N" 2xx "${H1[@]}" -H "authorization: $AUTH" http://127.0.0.1:18582/paid
  measure "aperture free (auth off), HTTP/1.1 ($VDRIVER)" "$VAP" $NUDGE "$N" 2xx "${H1[@]}" http://127.0.0.1:18582/free
  measure "aperture paid L402, h2c ($VDRIVER)" "$VAP" $NUDGE "$N" 2xx "${H2[@]}" -H "authorization: $AUTH" http://127.0.0.1:18582/paid
  if [ $VDRIVER = io_uring ]; then
    kill -9 "$VAP"; wait "$VAP" 2>/dev/null || true
    vg_aperture legacy
  fi
  # A challenge costs ~40x a paid request (BOLT11 signing): fewer of them.
  measure "aperture 402 (dev backend), HTTP/1.1 ($VDRIVER)" "$VAP" $NUDGE $((N / 5)) 4xx "${H1[@]}" http://127.0.0.1:18582/paid
  kill -9 "$VAP"; wait "$VAP" 2>/dev/null || true
fi
