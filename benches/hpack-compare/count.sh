#!/bin/bash
# Instructions per decode: callgrind totals at ITERS=1001 minus ITERS=1, over 1000.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --quiet
bin=target/release/hpack-compare
ir() {
    ITERS=$2 valgrind --tool=callgrind --callgrind-out-file=target/cg.out $bin "$1" >/dev/null 2>&1
    grep -E "^(summary|totals)" target/cg.out | head -1 | awk '{print $2}'
}
for v in ours-first ours-repeat loona-first loona-repeat loona-copy-repeat hpack-first hpack-repeat \
    httlib-first httlib-repeat; do
    a=$(ir "$v" 1)
    b=$(ir "$v" 1001)
    echo "$v $(((b - a) / 1000))"
done
