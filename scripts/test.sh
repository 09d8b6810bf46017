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
# l402-requests is a real third-party client driven against the proxy (tests/it/clients.rs).
python3 -m pip install --quiet --disable-pip-version-check l402-requests==0.9.0
# h2 (with hpack and hyperframe) is the conformance peer of the native HTTP/2 codec and server
# (tests/it/h2n_conformance.rs, tests/it/h2_peer.rs).
python3 -m pip install --quiet --disable-pip-version-check h2==4.2.0
# grpcio (the C-core gRPC client, an HTTP/2 stack other than tonic's) is driven through the proxy
# by tests/it/grpc_py.rs (tests/clients/grpcio_client.py; generic calls, no code generation).
python3 -m pip install --quiet --disable-pip-version-check grpcio==1.85.1
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Debian packages, as root or through passwordless sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}
apt_install() {
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The JavaScript clients driven against the proxy (tests/it/clients.rs): Alby's lightning-tools
# and the mppx SDK, pinned in tests/clients/package-lock.json, into tests/clients/node_modules.
# Node and npm come from Debian's packages when missing. The tests skip a client that is not
# installed only outside CI; in CI (CI set) an install that fails fails the run here.
install_node_clients() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || return 1
  fi
  # The clients use the global fetch: Node 18 or later.
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' || {
    echo "node $(node --version) is older than 18" >&2
    return 1
  }
  (cd tests/clients && npm ci --no-audit --no-fund --loglevel=error) || return 1
}
echo "== installing the JavaScript clients (npm ci in tests/clients)"
if ! install_node_clients; then
  if [ -n "${CI:-}" ]; then
    echo "the JavaScript clients could not be installed; CI needs them (tests/it/clients.rs)" >&2
    exit 1
  fi
  echo "warning: the JavaScript clients could not be installed; their tests will be skipped" >&2
fi

# A throwaway PostgreSQL server on loopback for the store tests (tests/it/store.rs), from Debian's
# packages. The tests skip PostgreSQL only when APERTURE_TEST_PG is unset outside CI; in CI
# (CI set) a server that cannot start fails the run here. The same server also takes TLS
# (ssl=on, a certificate for IP 127.0.0.1 from a throwaway test CA made with openssl), exported
# as APERTURE_TEST_PG_TLS: a libpq URL with sslmode=verify-full and sslrootcert=<the CA file>
# (tests/it/pg_tls.rs). Plain connections (APERTURE_TEST_PG) keep working beside it.
make_pg_certs() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=aperture test CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  chmod 600 "$dir/server.key"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir/server.key" "$dir/server.pem"; fi
}
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
start_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local bin port dir
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d /tmp/aperture-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  make_pg_certs "$dir"
  as_pg "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
  as_pg "$bin/pg_ctl -D $dir/data -l $dir/log -w -o '-k $dir -c listen_addresses=127.0.0.1 -p $port -c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key' start" >/dev/null
  PG_STOP="$bin/pg_ctl -D $dir/data -m immediate stop"
  PG_DIR="$dir"
  trap 'as_pg "$PG_STOP" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
  as_pg "$bin/createdb -h 127.0.0.1 -p $port -U postgres aperture_test"
  export APERTURE_TEST_PG="postgres://postgres@127.0.0.1:$port/aperture_test?sslmode=disable"
  export APERTURE_TEST_PG_TLS="postgres://postgres@127.0.0.1:$port/aperture_test?sslmode=verify-full&sslrootcert=$dir/ca.pem"
  echo "PostgreSQL on 127.0.0.1:$port, plain and TLS (data in $dir)"
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

# Debian's redis-server for the fleet-wide rate-limit tests (tests/it/fleet_redis.rs): each test
# starts its own on a free loopback port (so that it can kill and restart it) from the binary in
# APERTURE_TEST_REDIS_SERVER. They skip only outside CI when it is missing; in CI it must install.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian package)"
  if ! apt_install redis-server; then
    if [ -n "${CI:-}" ]; then
      echo "redis-server could not be installed; CI needs it for the fleet rate-limit tests" >&2
      exit 1
    fi
    echo "warning: redis-server could not be installed; the fleet rate-limit tests will be skipped" >&2
  fi
fi
if command -v redis-server >/dev/null 2>&1; then
  export APERTURE_TEST_REDIS_SERVER="$(command -v redis-server)"
fi

# Pebble, Let's Encrypt's ACME test server, for the autocert tests (tests/it/acme.rs start it
# themselves on loopback). They skip when it is missing outside CI; in CI it must install.
if ! command -v pebble >/dev/null 2>&1; then
  echo "== installing pebble (Debian package)"
  if ! apt_install pebble; then
    if [ -n "${CI:-}" ]; then
      echo "pebble could not be installed; CI needs it for the autocert tests" >&2
      exit 1
    fi
    echo "warning: pebble could not be installed; the autocert tests will be skipped" >&2
  fi
fi

# Debian's chromium, headless, for the dashboard's real-browser test (tests/it/dashboard.rs drives
# it over the DevTools protocol). About 15 s on a machine with Debian's mirror close by. The
# test skips it when missing outside CI; in CI it must install.
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package)"
  if ! apt_install chromium; then
    if [ -n "${CI:-}" ]; then
      echo "chromium could not be installed; CI needs it for the dashboard's browser test" >&2
      exit 1
    fi
    echo "warning: chromium could not be installed; the dashboard's browser test will be skipped" >&2
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

echo "== Debian package: build around the tested binary, dpkg -i, checks, dpkg -r"
# packaging/test-deb.sh: needs root (CI's fresh machine is); elsewhere it skips without it.
bash packaging/test-deb.sh target/debug/aperture

# One closing line for the whole run, in the plain "N passed, N failed" form.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all suites: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test.log
