# Sourced by bench/reapi.sh and bench/farm.sh: a free loopback port, and BuildGrid started
# on a config the caller wrote.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_buildgrid VENV DIR: starts bgd on DIR/bgd.yml (log in DIR/bgd.log) and sets BGD_PID
# once it listens (its pid file appears then); one that does not within 60 s is killed and
# the script exits with its log.
start_buildgrid() {
  "$1/bin/bgd" server start --pid-file "$2/bgd.pid" "$2/bgd.yml" > "$2/bgd.log" 2>&1 &
  BGD_PID=$!
  for _ in $(seq 600); do [ -f "$2/bgd.pid" ] && return 0; sleep 0.1; done
  kill "$BGD_PID" 2>/dev/null || true
  tail -20 "$2/bgd.log"
  exit 1
}
