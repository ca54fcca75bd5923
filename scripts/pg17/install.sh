#!/usr/bin/env bash
# PostgreSQL 17's server and client programs for the tests of its block-level incremental base
# backups (pg_basebackup --incremental, pg_combinebackup). Debian 12 has only PostgreSQL 15, so
# this takes Debian 13's packages (deb.debian.org, the only package host CI reaches), unpacks them
# into a private folder without installing any of them system-wide (only patchelf, from Debian 12,
# is installed with apt-get when missing), and points the programs at the
# C library and shared libraries that came with them (patchelf), so they never load Debian 12's.
#
# Usage: bash scripts/pg17/install.sh [DIR]   (default /opt/strata-pg17; needs root for apt-get)
# Prints the folder of the programs (DIR/root/usr/lib/postgresql/17/bin) on its last line.
# Does nothing but print it when DIR already holds a working PostgreSQL 17.
set -euo pipefail
DIR="${1:-/opt/strata-pg17}"
ROOT="$DIR/root"
BIN="$ROOT/usr/lib/postgresql/17/bin"
LIBS="$ROOT/usr/lib/x86_64-linux-gnu"

if [ -x "$BIN/postgres" ] && "$BIN/postgres" --version 2>/dev/null | grep -q '(PostgreSQL) 17\.' && "$BIN/pg_combinebackup" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "scripts/pg17/install.sh: only x86_64 is supported" >&2; exit 1; }
command -v patchelf >/dev/null || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >&2; }

# A private apt state: the machine's own sources and package database stay as they are.
mkdir -p "$DIR/apt/state/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs"
cat > "$DIR/apt/sources.list" <<'LIST'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
LIST
APT=(-o "Dir::State=$DIR/apt/state" -o "Dir::Cache=$DIR/apt/cache" -o "Dir::Etc::sourcelist=$DIR/apt/sources.list"
  -o "Dir::Etc::sourceparts=-" -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root")
apt-get "${APT[@]}" update -qq >&2

# The programs and the shared libraries they load (found with ldd); the JIT (LLVM) is left out:
# without llvmjit.so the server runs with jit off.
PACKAGES=(postgresql-17 postgresql-client-17 libpq5 libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblz4-1
  liblzma5 libssl3t64 libicu76 libxml2 libldap2 libsasl2-2 libgssapi-krb5-2 libkrb5-3 libk5crypto3
  libkrb5support0 libcom-err2 libkeyutils1 libpam0g libaudit1 libcap-ng0 libcap2 libsystemd0 libselinux1
  libpcre2-8-0 libuuid1 libcrypt1 libedit2 libbsd0 libmd0 libtinfo6 libgcrypt20 libgpg-error0)
rm -f "$DIR/debs/"*.deb
(cd "$DIR/debs" && apt-get "${APT[@]}" download -qq "${PACKAGES[@]}" >&2)

rm -rf "$ROOT.new"
mkdir -p "$ROOT.new"
for deb in "$DIR/debs/"*.deb; do dpkg-deb -x "$deb" "$ROOT.new"; done
rm -f "$ROOT.new/usr/lib/postgresql/17/lib/"llvmjit*.so
# DT_RPATH (not RUNPATH) so that the libraries' own dependencies resolve here too.
for f in "$ROOT.new/usr/lib/postgresql/17/bin/"* "$ROOT.new/usr/lib/postgresql/17/lib/"*.so; do
  if head -c 4 "$f" | grep -q 'ELF'; then
    patchelf --remove-rpath "$f"
    patchelf --force-rpath --set-rpath "$LIBS:$ROOT/lib/x86_64-linux-gnu" "$f"
    case "$f" in *.so) ;; *) patchelf --set-interpreter "$LIBS/ld-linux-x86-64.so.2" "$f" ;; esac
  fi
done
rm -rf "$ROOT"
mv "$ROOT.new" "$ROOT"
chmod -R a+rX "$DIR"
"$BIN/postgres" --version >&2
echo "$BIN"
