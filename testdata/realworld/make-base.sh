#!/bin/sh
# Makes (once) a Debian bookworm root filesystem tarball for the real-base test suite
# (tests/realworld) and prints its path. The tarball is cached in
# ${KILN_TEST_CACHE:-/var/cache/kiln-tests}, named by a hash of this script, the variant and
# the host's CA bundle, so a changed recipe or a changed host trust makes a new one.
#
#   make-base.sh min   minbase: apt, dpkg, coreutils; what `FROM debian:bookworm` gives
#   make-base.sh dev   min plus nodejs, npm, python3-venv, gcc and libc6-dev, the toolchains
#                      that node:, python: and gcc: images would bring
#
# The host's /etc/ssl/certs/ca-certificates.crt is copied in, so HTTPS inside a RUN (pip,
# npm) trusts what the host trusts. Needs root, mmdebstrap and Debian's package mirror.
set -eu
variant=${1:?usage: make-base.sh min|dev}
case "$variant" in
  min) include= ;;
  dev) include=--include=nodejs,npm,python3-venv,gcc,libc6-dev ;;
  *) echo "make-base.sh: unknown variant $variant (min or dev)" >&2; exit 2 ;;
esac
ca=/etc/ssl/certs/ca-certificates.crt
[ -r "$ca" ] || { echo "make-base.sh: $ca missing (apt-get install ca-certificates)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "make-base.sh: mmdebstrap missing (apt-get install mmdebstrap)" >&2; exit 1; }
cache=${KILN_TEST_CACHE:-/var/cache/kiln-tests}
mkdir -p "$cache"
chmod 755 "$cache"
hash=$( (cat "$0" "$ca"; echo "$variant") | sha256sum | cut -c1-16)
out="$cache/bookworm-$variant-$hash.tar"
# One maker at a time; the others wait and then find the tarball.
exec 9>"$out.lock"
flock 9
# A regular, non-empty file only: an earlier run may have left something else there.
if [ ! -f "$out" ] || [ ! -s "$out" ]; then
  rm -rf "$out"
  tmp="$out.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  # The format named, not guessed from the name: "$tmp" does not end in .tar, and
  # mmdebstrap then makes a directory.
  mmdebstrap --quiet --variant=minbase --format=tar $include \
    --customize-hook="mkdir -p \"\$1/etc/ssl/certs\" && cp $ca \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
    bookworm "$tmp" >&2
  chmod 644 "$tmp"
  mv "$tmp" "$out"
  trap - EXIT
fi
echo "$out"
