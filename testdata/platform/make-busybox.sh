#!/bin/sh
# Fetches (once) Debian's busybox-static for a foreign architecture and prints the path of
# its binary, for the multi-platform tests (tests/platform.rs). Cached in
# ${KILN_TEST_CACHE:-/var/cache/kiln-tests}.
#
#   make-busybox.sh arm64
#
# Needs root (dpkg --add-architecture, apt-get update) and Debian's package mirror. The
# binary is Debian's, under busybox's GPL-2 (/usr/share/doc/busybox-static/copyright in
# the package).
set -eu
arch=${1:?usage: make-busybox.sh DEBIAN-ARCH}
cache=${KILN_TEST_CACHE:-/var/cache/kiln-tests}
mkdir -p "$cache"
chmod 755 "$cache"
out="$cache/busybox-static-$arch"
exec 9>"$out.lock"
flock 9
if [ ! -s "$out" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
  fi
  apt-get update -q >&2
  (cd "$work" && apt-get download -q "busybox-static:$arch" >&2)
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/root"
  cp "$work/root/bin/busybox" "$out.tmp"
  chmod 755 "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "$out"
