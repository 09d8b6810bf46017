#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ one after another on one core and reports, per target,
# the executions done and whether it crashed; exits non-zero on any crash, timeout or OOM.
#
#   scripts/fuzz.sh SECONDS [TARGET...]      all targets when none is named
#
# Environment:
#   FUZZ_SANITIZER=address   build with AddressSanitizer (default: none, several times faster)
#   FUZZ_RUNS=N              also stop a target after N executions (whichever comes first)
#   H1_CHUNKED_ALLOW=a,b     reference error kinds h1_chunked tolerates (see its header)
# Seeds are read from fuzz/corpus/TARGET (committed); what libFuzzer adds goes to
# fuzz/corpus-grown/TARGET and crash inputs to fuzz/artifacts/TARGET (both ignored by git).
set -uo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh SECONDS [TARGET...]  (FUZZ_SANITIZER=address, FUZZ_RUNS=N)" >&2
    exit 2
fi
seconds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# cargo-fuzz needs nightly flags (-Zsanitizer, -Cpasses); RUSTC_BOOTSTRAP lets stable take them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz || exit 1
fi

sanitizer=${FUZZ_SANITIZER:-none}
# Each sanitizer builds into its own directory, so switching does not rebuild the other's.
build=()
[[ $sanitizer != none ]] && build=(--target-dir "fuzz/target/$sanitizer")
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

failed=0
printf '%-18s %14s %8s  %s\n' target executions seconds result
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-grown/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
    [[ -n ${FUZZ_RUNS:-} ]] && args+=(-runs="$FUZZ_RUNS")
    start=$(date +%s)
    cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" "${build[@]}" "$t" \
        "fuzz/corpus-grown/$t" "fuzz/corpus/$t" -- "${args[@]}" >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [[ $rc -eq 0 ]]; then
        result=ok
    elif [[ -z $execs ]] && ! grep -q '^INFO: Seed' "$log"; then
        result="build or start failed (rc $rc), see $log"
        failed=1
    else
        kind=$(grep -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^:]+:[0-9]+' "$log" | head -1)
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | head -1)
        result="CRASH (rc $rc${kind:+, $kind}) ${artifact:-see $log}"
        failed=1
    fi
    printf '%-18s %14s %8s  %s\n' "$t" "${execs:-?}" "$elapsed" "$result"
done
exit $failed
