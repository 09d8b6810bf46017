#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine, then runs all of it:
# formatting, lints, unit tests, the integration test binary and the bench harnesses (compiled).
# This is README command 2, and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
# pymacaroons is the third-party oracle for the macaroon format (tests/it/l402.rs).
python3 -m pip install --quiet --disable-pip-version-check pymacaroons==0.13.0
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
mkdir -p target
# Library, binary and integration tests of every crate (there are no doctests).
cargo test --workspace --lib --bins --tests 2>&1 | tee target/test.log

# One closing line for the whole run, in the plain "N passed, N failed" form.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all suites: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test.log
