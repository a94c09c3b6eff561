#!/usr/bin/env bash
# Remote execution's figure (issue 16): wall time of a 4-stage build (four independent
# stages of CPU work, then one that copies from all four) run locally and with --remote on
# a BuildGrid farm with two `kiln worker`s, each best of 3 with --no-cache. Everything runs
# on this machine, so the workers share its cores with the client: the figure shows what
# the farm costs on top of the work, not the speedup of machines of its own.
# Usage: bench/farm.sh   (as root; needs postgresql, python3-venv and PyPI the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
DIR=${BENCH_DIR:-/tmp/kiln-bench}/farm
rm -rf "$DIR" && mkdir -p "$DIR/ctx" "$DIR/pg"
venv=$(testdata/reapi/make-buildgrid.sh)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
. bench/buildgrid.sh
pgport=$(free_port) port=$(free_port)
chown postgres:postgres "$DIR/pg"
pg() { runuser -u postgres -- "$pgbin/$1" "${@:2}"; }
pg initdb -D "$DIR/pg/data" -U bgd --auth=trust -E UTF8 --no-locale >/dev/null
pg pg_ctl -D "$DIR/pg/data" -l "$DIR/pg/log" -w -o "-c listen_addresses=127.0.0.1 -p $pgport -k $DIR/pg -c fsync=off" start >/dev/null
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pg pg_ctl -D "$DIR/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
pg createdb -h 127.0.0.1 -p "$pgport" -U bgd bgd
"$venv/bin/bgd" migrate apply "postgresql+psycopg2://bgd@127.0.0.1:$pgport/bgd" >/dev/null 2>&1
cat > "$DIR/bgd.yml" <<YML
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true
authorization:
  method: none
monitoring:
  enabled: false
connections:
  - !sql-connection &sql
    connection-string: postgresql+psycopg2://bgd@127.0.0.1:$pgport/bgd
    pool-size: 5
    pool-timeout: 30
    max-overflow: 10
storages:
  - !lru-storage &cas
    size: 1024M
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    property-set: !dynamic-property-set
      match-property-keys: [kiln-step]
    bot-session-keepalive-timeout: 30
    poll-interval: 0.1
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.1
instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
        operation-stream-keepalive-timeout: 5
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
thread-pool-size: 20
grpc-server-options:
  grpc.so_reuseport: 0
YML
start_buildgrid "$venv" "$DIR"
pids+=("$BGD_PID")
endpoint=grpc://127.0.0.1:$port
for w in 1 2; do
  "$KILN" --root "$DIR/worker$w" worker --endpoint "$endpoint" --bot-id "w$w" > "$DIR/worker$w.log" 2>&1 &
  pids+=($!)
done

cp "$(command -v busybox)" "$DIR/ctx/busybox"
{
  printf 'FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n'
  for s in a b c d; do
    printf 'FROM base AS %s\nRUN i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo %s > /%s\n' "$s" "$s" "$s"
  done
  printf 'FROM base\n'
  for s in a b c d; do printf 'COPY --from=%s /%s /%s\n' "$s" "$s" "$s"; done
  printf 'RUN cat /a /b /c /d > /all\n'
} > "$DIR/ctx/Dockerfile"
ms() { python3 -c 'import sys; print(int(float(sys.argv[1])*1000))' "$1"; }
best() {
  local best=999999 t0 t1 t
  for n in 1 2 3; do
    rm -rf "$DIR/client"
    t0=$(date +%s.%N)
    "$KILN" --root "$DIR/client" build --progress quiet --no-cache "$@" "$DIR/ctx" > "$DIR/id"
    t1=$(date +%s.%N)
    t=$(ms "$(echo "$t1 - $t0" | bc)"); [ "$t" -lt "$best" ] && best=$t
  done
  echo "$best ms (image $(cut -c1-19 "$DIR/id"))"
}
echo "4-stage build, local:              $(best)"
echo "4-stage build, two kiln workers:   $(best --remote "$endpoint")"
