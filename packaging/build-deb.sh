#!/usr/bin/env bash
# Builds the aperture Debian package with dpkg-deb alone (no cargo-deb to install), from the
# [package.metadata.deb] table of Cargo.toml (assets, conffiles, maintainer scripts, depends).
#
#   packaging/build-deb.sh                  release build, then target/debian/aperture_<v>-1_<arch>.deb
#   packaging/build-deb.sh --binary PATH    package an existing binary instead of building one
#   packaging/build-deb.sh --out DIR        write the .deb into DIR (default target/debian)
#   packaging/build-deb.sh --fast           gzip -1 instead of xz (the test suite's throwaway package)
#   packaging/build-deb.sh --generate-only  only make the generated assets under target/packaging
#                                           (config, man page, completions); `cargo deb` then works
#
# The generated assets come from the binary itself (`aperture man`, `aperture completions`),
# and the packaged /etc/aperture/aperture.yaml is sample-conf.yaml with the package's paths,
# checked with `aperture --check-config`. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

binary="" out="target/debian" fast=0 generate_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=1; shift ;;
    --generate-only) generate_only=1; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

if [ -z "$binary" ]; then
  cargo build --release --locked --bin aperture
  binary=target/release/aperture
fi
if [ ! -x "$binary" ]; then
  echo "build-deb.sh: $binary is not an executable" >&2
  exit 1
fi

# --- generated assets -------------------------------------------------------------------------
gen=target/packaging
rm -rf "$gen"
mkdir -p "$gen/completions"

# The packaged config: the sample, with the state under /var/lib/aperture (the unit's
# --basedir and StateDirectory) and lnd's files where ProtectHome=yes still lets the service
# read them. Each substitution must apply, or the sample changed under us.
subst() { # FROM TO: replace the line FROM (exactly) with TO in the packaged config
  grep -qxF -- "$1" "$gen/aperture.yaml" || {
    echo "build-deb.sh: sample-conf.yaml no longer has the line: $1" >&2
    exit 1
  }
  FROM=$1 TO=$2 awk '$0 == ENVIRON["FROM"] { $0 = ENVIRON["TO"] } { print }' \
    "$gen/aperture.yaml" >"$gen/aperture.yaml.new"
  mv "$gen/aperture.yaml.new" "$gen/aperture.yaml"
}
{
  cat <<'HEADER'
# /etc/aperture/aperture.yaml, installed by the aperture package (from sample-conf.yaml;
# the original is in /usr/share/doc/aperture/examples/). aperture.service runs
#   aperture --basedir /var/lib/aperture --config /etc/aperture/aperture.yaml
# as the system user aperture, which reads this file (mode 0640 root:aperture).
# 1. Point the authenticator at your lnd: copy its tls.cert and invoice.macaroon into
#    /etc/aperture/lnd/ (the service cannot read /home), readable by group aperture.
# 2. Describe your services below; check: aperture --check-config --config <this file>
# 3. systemctl enable --now aperture; after edits: systemctl reload aperture
# Logs: journalctl -u aperture.

HEADER
  cat sample-conf.yaml
} >"$gen/aperture.yaml"
subst 'basedir: "~/.aperture"' 'basedir: "/var/lib/aperture"'
subst '  databasefilename: "~/.aperture/aperture.db"   # not "dbfile"' \
  '  databasefilename: "/var/lib/aperture/aperture.db"   # not "dbfile"'
subst '  tlspath: "~/.lnd/tls.cert"' '  tlspath: "/etc/aperture/lnd/tls.cert"'
subst '  macdir: "~/.lnd/data/chain/bitcoin/mainnet"   # uses invoice.macaroon' \
  '  macdir: "/etc/aperture/lnd"   # uses invoice.macaroon'
subst '  macaroonpath: "~/.aperture/admin.macaroon"   # default: <basedir>/admin.macaroon' \
  '  macaroonpath: "/var/lib/aperture/admin.macaroon"   # default: <basedir>/admin.macaroon'
if grep -n '~/' "$gen/aperture.yaml" | grep -v '^[0-9]*:\s*#' >/dev/null; then
  echo "build-deb.sh: the packaged config still names a home directory:" >&2
  grep -n '~/' "$gen/aperture.yaml" | grep -v '^[0-9]*:\s*#' >&2
  exit 1
fi
if ! check=$("$binary" --check-config --config "$gen/aperture.yaml" 2>&1); then
  echo "build-deb.sh: the packaged config does not validate:" >&2
  echo "$check" >&2
  exit 1
fi

"$binary" man | gzip -9n >"$gen/aperture.1.gz"
"$binary" completions bash >"$gen/completions/aperture.bash"
"$binary" completions zsh >"$gen/completions/_aperture"
"$binary" completions fish >"$gen/completions/aperture.fish"
if [ "$generate_only" = 1 ]; then
  echo "$gen"
  exit 0
fi

# --- metadata ---------------------------------------------------------------------------------
# One tab-separated record per line: KEY VALUE, or ASSET SRC DEST MODE.
meta=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "aperture")
deb = pkg["metadata"]["deb"]
print("version\t" + pkg["version"])
# The synopsis: the crate description up to its first comma (Debian wants < 80 characters).
print("synopsis\t" + pkg["description"].split(",")[0])
for key in ("maintainer", "copyright", "section", "priority", "depends", "maintainer-scripts"):
    print(key + "\t" + deb[key])
print("extended\t" + " ".join(deb["extended-description"].split()))
print("license\t" + pkg.get("license", ""))
for f in deb.get("conf-files", []):
    print("conffile\t" + f)
for src, dest, mode in deb["assets"]:
    print("\t".join(("asset", src, dest, mode)))
')
field() { printf '%s\n' "$meta" | awk -F '\t' -v k="$1" '$1 == k { sub(/^[^\t]*\t/, ""); print; exit }'; }

version="$(field version)-1"
arch=$(dpkg --print-architecture)
# $auto: what the binary links, as dpkg-shlibdeps would say for a Rust binary: glibc (the newest
# symbol version it uses) and libgcc_s (unwinding, panic = "unwind").
glibc=$(grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' "$binary" | sort -Vu | tail -n 1 | sed 's/^GLIBC_//')
auto="libc6 (>= ${glibc:-2.17})"
if grep -aq 'libgcc_s\.so\.1' "$binary"; then
  auto="$auto, libgcc-s1"
fi
depends=$(field depends)
depends=${depends//\$auto/$auto}

# --- staging ----------------------------------------------------------------------------------
root=target/packaging/root
mkdir -p "$root/DEBIAN"
while IFS=$'\t' read -r kind src dest mode; do
  [ "$kind" = asset ] || continue
  # As cargo-deb does: target/release/ names the build output, here the binary being packaged.
  case "$src" in target/release/aperture) src=$binary ;; esac
  # A glob names several files (as cargo-deb allows), each into the destination directory.
  for file in $src; do
    [ -e "$file" ] || { echo "build-deb.sh: asset $src matches nothing" >&2; exit 1; }
    to=$dest
    case "$to" in */) to="$to$(basename "$file")" ;; esac
    install -D -m "$mode" "$file" "$root/$to"
    if [ "$file" = "$binary" ] && command -v strip >/dev/null 2>&1; then
      # Debug info out (symbols stay, for backtraces), as Debian packages ship binaries.
      strip --strip-debug "$root/$to"
    fi
  done
done <<<"$meta"

doc="$root/usr/share/doc/aperture"
mkdir -p "$doc"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: aperture

Files: *
Copyright: $(field copyright)
License: $(field license)
EOF

scripts=$(field maintainer-scripts)
for s in preinst postinst prerm postrm; do
  if [ -f "$scripts/$s" ]; then
    install -m 0755 "$scripts/$s" "$root/DEBIAN/$s"
  fi
done
printf '%s\n' "$meta" | awk -F '\t' '$1 == "conffile" { print $2 }' >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
{
  echo "Package: aperture"
  echo "Version: $version"
  echo "Architecture: $arch"
  echo "Maintainer: $(field maintainer)"
  echo "Installed-Size: $installed_kib"
  echo "Depends: $depends"
  echo "Section: $(field section)"
  echo "Priority: $(field priority)"
  echo "Description: $(field synopsis)"
  field extended | fold -s -w 78 | sed -e 's/ *$//' -e 's/^/ /'
} >"$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/aperture_${version}_${arch}.deb"
if [ "$fast" = 1 ]; then
  compress=(-Zgzip -z1)
else
  compress=(-Zxz)
fi
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
