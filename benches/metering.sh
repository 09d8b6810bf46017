#!/usr/bin/env bash
# The cost of metering a streamed response: CPU per MiB of one `aperture --cores 1` relaying the
# same body for a metered service (`dynamicprice.metered: true`: AuthorizeRequest, the rolling
# response tail, ReportUsage) and for an unmetered one (the same pricer, `metered: false`), on
# loopback.
#
#   benches/metering.sh [--mib N] [--rounds R]
#
# Starts: an origin (python3, one thread per connection) answering any path ending in `/len` with
# N MiB under Content-Length and any path ending in `/sse` with N MiB of 4 KiB server-sent
# events, chunked, the last one carrying OpenAI's `usage`; the fake pricer
# (`lnd-bridge --example fake_pricer`: admits everything, takes every report); and aperture with
# the dev backend and two services priced by that pricer, `/m/…` metered and `/p/…` not. Buys one
# L402 token per path, then downloads each body R times, alternating metered and unmetered (and
# which of the two goes first), and reads aperture's CPU time around each download (perf's
# task-clock when perf is installed, else utime + stime from /proc). Prints the median CPU ms per MiB of
# each path and the metered/unmetered ratio. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MIB=256 ROUNDS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) MIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cargo build --release --quiet
cargo build --release --quiet -p lnd-bridge --features fake --example fake_pricer
BIN=$PWD/target/release/aperture
WORK=$(mktemp -d /tmp/aperture-metering.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.2
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/origin.py" <<'PY'
import socket, sys, threading
MIB = int(sys.argv[1])
EVENT = b'data: {"choices":[{"delta":{"content":"' + b"x" * 4000 + b'"}}]}\n\n'
CHUNK = b"%x\r\n" % len(EVENT) + EVENT + b"\r\n"
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":999}}\n\ndata: [DONE]\n\n'
TOTAL = MIB * 1024 * 1024
BLOCK = b"y" * (256 * 1024)
def serve(c):
    f = c.makefile("rb")
    try:
        while True:
            head = b""
            while True:
                line = f.readline()
                if not line:
                    return
                head += line
                if line == b"\r\n":
                    break
            path = head.split(b" ")[1].split(b"?")[0]
            if path.endswith(b"/sse"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                batch = CHUNK * 64
                sent = 0
                while sent < TOTAL:
                    c.sendall(batch)
                    sent += len(EVENT) * 64
                c.sendall(b"%x\r\n" % len(USAGE) + USAGE + b"\r\n0\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % TOTAL)
                left = TOTAL
                while left > 0:
                    n = min(left, len(BLOCK))
                    c.sendall(BLOCK[:n])
                    left -= n
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18680))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
python3 "$WORK/origin.py" "$MIB" &
PIDS+=($!)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/18680) 2>/dev/null && break; sleep 0.05; done
target/release/examples/fake_pricer 10 > "$WORK/pricer.addr" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/pricer.addr" ] && break; sleep 0.05; done
PRICER=$(cat "$WORK/pricer.addr")

service() { # name pathregexp metered
  cat <<YAML
  - name: $1
    hostregexp: ".*"
    pathregexp: "$2"
    address: "127.0.0.1:18680"
    protocol: http
    dynamicprice:
      enabled: true
      grpcaddress: "$PRICER"
      insecure: true
      metered: $3
YAML
}
cat > "$WORK/aperture.yaml" <<YAML
listenaddr: "127.0.0.1:18682"
insecure: true
dbbackend: sqlite
sqlite:
  databasefilename: "$WORK/aperture.db"
debuglevel: warn
authenticator:
  network: regtest
  dev:
    listenaddr: "127.0.0.1:18692"
services:
$(service metered "^/m/" true)
$(service plain "^/p/" false)
YAML
"$BIN" --config "$WORK/aperture.yaml" --basedir "$WORK" --cores 1 2>"$WORK/aperture.log" >/dev/null &
APERTURE=$!
PIDS+=($APERTURE)
for _ in $(seq 200); do curl -s -o /dev/null http://127.0.0.1:18682/ && break; sleep 0.05; done

buy() { # path
  local challenge mac invoice preimage
  challenge=$(curl -s -D - -o /dev/null "http://127.0.0.1:18682$1" | tr -d '\r' | grep '^Www-Authenticate: L402')
  mac=$(sed -E 's/.*macaroon="([^"]+)".*/\1/' <<<"$challenge")
  invoice=$(sed -E 's/.*invoice="([^"]+)".*/\1/' <<<"$challenge")
  preimage=$(curl -s -X POST "http://127.0.0.1:18692/pay" -d "{\"invoice\":\"$invoice\"}" | sed -E 's/.*"preimage": *"([0-9a-f]+)".*/\1/')
  echo "Authorization: L402 $mac:$preimage"
}
# aperture's CPU time while a command runs, in ns: perf's task-clock when perf can attach (exact),
# else utime + stime from /proc (clock ticks: use a larger --mib).
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$APERTURE/stat"; }
measure() {
  if perf stat -x, -e task-clock -p "$APERTURE" -o "$WORK/perf.txt" -- "$@" >/dev/null 2>&1; then
    awk -F, '$3 == "task-clock" {printf "%d", $1 * 1e6}' "$WORK/perf.txt"
  else
    local before after
    before=$(cpu_ticks)
    "$@"
    after=$(cpu_ticks)
    echo $(((after - before) * TICK_NS))
  fi
}

declare -A AUTH NS
for path in /m/len /p/len /m/sse /p/sse; do
  AUTH[$path]=$(buy "$path")
  NS[$path]=""
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "${AUTH[$path]}" "http://127.0.0.1:18682$path")
  [ "$got" = 200 ] || { echo "$path answered $got" >&2; exit 1; }
done
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $(date -u +%F)"
echo "command: benches/metering.sh --mib $MIB --rounds $ROUNDS ($(git rev-parse --short HEAD))"
# Each round alternates which of the pair goes first; the figure per path is the median of its
# rounds (this machine's other load moves single runs by tens of percent).
for round in $(seq "$ROUNDS"); do
  for kind in len sse; do
    pair=(/m/$kind /p/$kind)
    [ $((round % 2)) = 0 ] && pair=(/p/$kind /m/$kind)
    for path in "${pair[@]}"; do
      ns=$(measure curl -s -o /dev/null -H "${AUTH[$path]}" "http://127.0.0.1:18682$path")
      NS[$path]="${NS[$path]} $ns"
    done
  done
done
median_per_mib() { # "ns ns ns ..."
  tr ' ' '\n' <<<"$1" | grep . | sort -n | awk -v mib="$MIB" '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1e6 / mib }'
}
printf '%-8s %14s %14s %8s\n' body "metered ms/MiB" "plain ms/MiB" ratio
for kind in len sse; do
  m=$(median_per_mib "${NS[/m/$kind]}") p=$(median_per_mib "${NS[/p/$kind]}")
  printf '%-8s %14s %14s %8s\n' "$kind" "$m" "$p" "$(awk -v m="$m" -v p="$p" 'BEGIN {printf "%.3f", m / p}')"
done
