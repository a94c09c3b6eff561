#!/usr/bin/env bash
# The REAPI cache's figures (issue 16), against a BuildGrid on loopback serving from
# memory (the venv of testdata/reapi/make-buildgrid.sh), with the release binary:
#   - a cache lookup per step: a 26-step build (busybox, 24 RUN) pushed by one store and
#     built all CACHED by a fresh one, best of 5, against the same all-CACHED build from
#     the local store; and the median `remote cache lookup` phase (KILN_TRACE_PHASES=1),
#     which includes reading the step's layer;
#   - bytes uploaded by a rebuild with one changed step (`--cache-to ... mode=max`).
# Usage: bench/reapi.sh   (as root; needs python3-venv and PyPI the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
DIR=${BENCH_DIR:-/tmp/kiln-bench}/reapi
rm -rf "$DIR" && mkdir -p "$DIR/ctx"
venv=$(testdata/reapi/make-buildgrid.sh)
. bench/buildgrid.sh

port=$(free_port)
cat > "$DIR/bgd.yml" <<YML
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true
authorization:
  method: none
monitoring:
  enabled: false
storages:
  - !lru-storage &cas
    size: 1024M
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: true
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
thread-pool-size: 10
grpc-server-options:
  grpc.so_reuseport: 0
YML
start_buildgrid "$venv" "$DIR"
trap 'kill $BGD_PID 2>/dev/null; wait $BGD_PID 2>/dev/null || true' EXIT
endpoint=grpc://127.0.0.1:$port

cp "$(command -v busybox)" "$DIR/ctx/busybox"
write_dockerfile() {
  {
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    printf 'ENV PATH=/bin\n'
    for i in $(seq 0 22); do printf 'RUN echo %s > /step%s\n' "$i" "$i"; done
    printf 'RUN echo %s > /last\n' "$1"
  } > "$DIR/ctx/Dockerfile"
}
write_dockerfile first
ms() { python3 -c 'import sys; print(int(float(sys.argv[1])*1000))' "$1"; }
steps=26

"$KILN" --root "$DIR/a" build --progress quiet -t app:1 --cache-to "type=reapi,endpoint=$endpoint,mode=max" "$DIR/ctx" >/dev/null

best_remote=999999 best_local=999999
for _ in 1 2 3 4 5; do
  rm -rf "$DIR/b"
  t0=$(date +%s.%N)
  "$KILN" --root "$DIR/b" build --progress quiet -t app:1 --cache-from "type=reapi,endpoint=$endpoint" "$DIR/ctx" >/dev/null
  t1=$(date +%s.%N)
  t=$(ms "$(echo "$t1 - $t0" | bc)"); [ "$t" -lt "$best_remote" ] && best_remote=$t
  t0=$(date +%s.%N)
  "$KILN" --root "$DIR/b" build --progress quiet -t app:1 "$DIR/ctx" >/dev/null
  t1=$(date +%s.%N)
  t=$(ms "$(echo "$t1 - $t0" | bc)"); [ "$t" -lt "$best_local" ] && best_local=$t
done
echo "all $steps steps from the REAPI cache, fresh store: best of 5 = ${best_remote} ms; the same all-CACHED build from the local store: ${best_local} ms"
echo "  per step: $(( (best_remote - best_local) * 1000 / steps )) us more than a local hit (lookup + layer read + unpack)"
rm -rf "$DIR/b"
KILN_TRACE_PHASES=1 "$KILN" --root "$DIR/b" build --progress quiet -t app:1 --cache-from "type=reapi,endpoint=$endpoint" "$DIR/ctx" 2>"$DIR/phases" >/dev/null
python3 - "$DIR/phases" <<'PY'
import re, statistics, sys
ms = [float(m.group(1)) for l in open(sys.argv[1]) if "remote cache lookup" in l
      for m in [re.search(r"lookup\s+([0-9.]+) ms", l)] if m]
if ms:
    print(f"  remote cache lookup phase: median {statistics.median(ms):.2f} ms over {len(ms)} steps (max {max(ms):.2f} ms)")
PY

write_dockerfile second
"$KILN" --root "$DIR/a" build --progress plain -t app:2 --cache-to "type=reapi,endpoint=$endpoint,mode=max" "$DIR/ctx" 2>&1 \
  | grep -E "exported .* cache records" | sed 's/^/rebuild with one changed step: /'
