#!/usr/bin/env bash
# Builds the Debian package around an already built binary, installs it with dpkg -i, checks what
# it installed (the binary on PATH and its --version, the user, the config's owner, the man page,
# the completions, the unit through systemd-analyze verify), then removes and purges it.
#
#   packaging/test-deb.sh [BINARY]     default target/debug/aperture (what `cargo test` built)
#
# It needs root (or passwordless sudo) and dpkg. Without them it skips, except in CI (CI set),
# where it fails. It refuses to touch a machine where an aperture package is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/debug/aperture}

skip() {
  if [ -n "${CI:-}" ]; then
    echo "packaging test: $1; CI needs it" >&2
    exit 1
  fi
  echo "packaging test SKIPPED: $1" >&2
  exit 0
}
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}
fail() {
  echo "packaging test FAILED: $*" >&2
  exit 1
}

command -v dpkg-deb >/dev/null 2>&1 || skip "dpkg-deb is missing (not a Debian system)"
as_root true 2>/dev/null || skip "not root and no passwordless sudo"
if dpkg-query -W -f '${Status}' aperture 2>/dev/null | grep -q 'installed'; then
  skip "an aperture package is already installed here; not touching it"
fi
apt_install() {
  as_root apt-get update -qq &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# The package's dependencies (dpkg -i does not fetch them) and the unit checker.
command -v adduser >/dev/null 2>&1 || apt_install adduser || skip "cannot install adduser"
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd || skip "cannot install systemd (for systemd-analyze)"

deb=$(packaging/build-deb.sh --binary "$binary" --out target/deb-test --fast | tail -n 1)
echo "built $deb"

# What was here before, so that cleaning up removes only what the package test created.
had_user=0
getent passwd aperture >/dev/null && had_user=1
had_state=0
[ -e /var/lib/aperture ] && had_state=1
cleanup() {
  as_root dpkg -P aperture >/dev/null 2>&1 || true
  if [ "$had_user" = 0 ] && getent passwd aperture >/dev/null; then
    as_root userdel aperture >/dev/null 2>&1 || true
    as_root groupdel aperture >/dev/null 2>&1 || true
  fi
  if [ "$had_state" = 0 ]; then
    as_root rm -rf /var/lib/aperture
  fi
}
trap cleanup EXIT

as_root dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"

# The binary on PATH is this build.
want=$("$binary" --version)
got=$(/usr/bin/aperture --version) || fail "/usr/bin/aperture --version"
[ "$got" = "$want" ] || fail "/usr/bin/aperture --version says '$got', the build says '$want'"
echo "installed: $got"

# The system user, its state directory, the config readable by it and not by others.
getent passwd aperture >/dev/null || fail "no aperture user"
[ "$(stat -c '%U:%G %a' /var/lib/aperture)" = "aperture:aperture 750" ] ||
  fail "/var/lib/aperture is $(stat -c '%U:%G %a' /var/lib/aperture)"
[ "$(stat -c '%U:%G %a' /etc/aperture/aperture.yaml)" = "root:aperture 640" ] ||
  fail "/etc/aperture/aperture.yaml is $(stat -c '%U:%G %a' /etc/aperture/aperture.yaml)"
dpkg-query -W -f '${Conffiles}' aperture | grep -q '/etc/aperture/aperture.yaml' ||
  fail "/etc/aperture/aperture.yaml is not a conffile"
# The shipped config validates when the service's user reads it, with the unit's arguments.
as_root setpriv --reuid=aperture --regid=aperture --init-groups \
  /usr/bin/aperture --check-config --basedir /var/lib/aperture --config /etc/aperture/aperture.yaml >/dev/null ||
  fail "the aperture user cannot load /etc/aperture/aperture.yaml"

# The man page and the completions, generated from the CLI definition.
zcat /usr/share/man/man1/aperture.1.gz | grep -q '^\.TH aperture 1' || fail "man page"
bash -c 'source /usr/share/bash-completion/completions/aperture && complete -p aperture' >/dev/null ||
  fail "bash completion"
grep -q '^#compdef aperture' /usr/share/zsh/vendor-completions/_aperture || fail "zsh completion"
grep -q 'complete -c aperture' /usr/share/fish/vendor_completions.d/aperture.fish || fail "fish completion"

# The unit: systemd-analyze verify prints nothing for a clean unit. It runs without systemd as
# PID 1 (it only loads unit files); it checks the syntax, every directive, that ExecStart's
# binary exists and, through man(1), that Documentation=man:aperture(1) resolves. Without man(1)
# (a minimal image) that last check is left to the zcat above.
unit=/lib/systemd/system/aperture.service
man_check=()
if ! command -v man >/dev/null 2>&1; then
  man_check=(--man=no)
  echo "note: man(1) is not installed; systemd-analyze verify --man=no"
fi
verify=$(systemd-analyze verify "${man_check[@]}" "$unit" 2>&1) ||
  fail "systemd-analyze verify $unit: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify $unit is not clean: $verify"
grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
echo "systemd-analyze verify $unit: clean"

# Remove keeps the conffile, purge removes it; the binary goes with remove.
as_root dpkg -r aperture >/dev/null || fail "dpkg -r aperture"
[ ! -e /usr/bin/aperture ] || fail "/usr/bin/aperture survived dpkg -r"
[ -e /etc/aperture/aperture.yaml ] || fail "dpkg -r removed the conffile"
as_root dpkg -P aperture >/dev/null || fail "dpkg -P aperture"
[ ! -e /etc/aperture/aperture.yaml ] || fail "dpkg -P kept the conffile"
echo "packaging test passed: dpkg -i, --version, unit verified, dpkg -r, dpkg -P"
