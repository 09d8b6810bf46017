#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine, then runs all of it:
# formatting, lints, unit tests, the integration test binary and the bench harnesses (compiled).
# This is README command 2, and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
# pymacaroons is the third-party oracle for the macaroon format (tests/it/l402.rs).
python3 -m pip install --quiet --disable-pip-version-check pymacaroons==0.13.0
# pympp is the oracle for the Payment (MPP) scheme's challenges, ids and receipts (src/mpp).
python3 -m pip install --quiet --disable-pip-version-check pympp==0.16.0
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A throwaway PostgreSQL server on loopback for the store tests (tests/it/store.rs), from Debian's
# packages. The tests skip PostgreSQL only when APERTURE_TEST_PG is unset outside CI; in CI
# (CI set) a server that cannot start fails the run here.
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
start_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
  fi
  local bin port dir
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d /tmp/aperture-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  as_pg "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
  as_pg "$bin/pg_ctl -D $dir/data -l $dir/log -w -o '-k $dir -c listen_addresses=127.0.0.1 -p $port' start" >/dev/null
  PG_STOP="$bin/pg_ctl -D $dir/data -m immediate stop"
  PG_DIR="$dir"
  trap 'as_pg "$PG_STOP" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
  as_pg "$bin/createdb -h 127.0.0.1 -p $port -U postgres aperture_test"
  export APERTURE_TEST_PG="postgres://postgres@127.0.0.1:$port/aperture_test?sslmode=disable"
  echo "PostgreSQL on 127.0.0.1:$port (data in $dir)"
}
if [ -n "${APERTURE_TEST_PG:-}" ]; then
  echo "== PostgreSQL: using APERTURE_TEST_PG from the environment"
else
  echo "== starting PostgreSQL"
  if ! start_postgres; then
    if [ -n "${CI:-}" ]; then
      echo "PostgreSQL could not start; CI needs it for the store tests" >&2
      exit 1
    fi
    echo "warning: PostgreSQL could not start; its store tests will be skipped" >&2
  fi
fi

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
