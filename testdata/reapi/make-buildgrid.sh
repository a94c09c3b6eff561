#!/bin/sh
# Makes (once) a Python venv with BuildGrid (requirements.txt, from PyPI) for the REAPI
# tests (tests/reapi.rs) and prints its path. Cached in ${KILN_TEST_CACHE:-/var/cache/kiln-tests},
# named by a hash of this script and the requirements. Needs python3 with venv and PyPI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v python3 >/dev/null || { echo "make-buildgrid.sh: python3 missing (apt-get install python3-venv)" >&2; exit 1; }
cache=${KILN_TEST_CACHE:-/var/cache/kiln-tests}
mkdir -p "$cache"
chmod 755 "$cache"
hash=$(cat "$0" "$here/requirements.txt" | sha256sum | cut -c1-16)
out="$cache/buildgrid-$hash"
# One maker at a time; the others wait and then find the venv.
exec 9>"$out.lock"
flock 9
# Venvs hard-code their path, so it is made in place; `.done`, written last, says it is
# whole (a killed install leaves none, and the next run starts over).
if [ ! -f "$out/.done" ]; then
  rm -rf "$out"
  python3 -m venv "$out/venv" >&2
  "$out/venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  touch "$out/.done"
fi
[ -x "$out/venv/bin/bgd" ] || { echo "make-buildgrid.sh: no bgd in $out/venv" >&2; exit 1; }
# The tests run as an unprivileged user too: they read and execute it.
chmod -R a+rX "$out"
echo "$out/venv"
