#!/usr/bin/env bash
# The README promises `npm start` serves on embedded defaults. Start it exactly that way (in a
# scratch data dir and a free port), wait for readiness, then SIGTERM and expect exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="$(mktemp -d)"
port="$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
log="$data_dir/server.log"
DATA_DIR="$data_dir" DATABASE_URL="sqlite:$data_dir/switchboard.db" PORT="$port" HOST=127.0.0.1 \
  npm start >"$log" 2>&1 &
pid=$!
server_pid=""
# Whatever happens, neither npm nor the server outlives the smoke test.
trap 'kill -9 $pid $server_pid 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/health/ready"; echo
# `npm start` built the web app too: the page is served at /.
curl -fsS "http://127.0.0.1:$port/" | grep -q '<title>Switchboard</title>' || { echo "no web app at /"; cat "$log"; exit 1; }
# SIGTERM to npm itself, as a supervisor or `kill` would send it: npm forwards it to the script's
# shell, and the start script `exec`s node so that the server is that process (without the
# exec, the shell died and the server kept running, orphaned, with no graceful shutdown).
server_pid="$(grep -o '"pid":[0-9]*' "$log" | head -n1 | cut -d: -f2)"
kill -TERM "$pid"
status=0; wait $pid || status=$?
if [ "$status" -ne 0 ]; then echo "npm start exited with $status"; cat "$log"; exit 1; fi
grep -q '"msg":"shutting down"' "$log" || { echo "no graceful shutdown in the log"; cat "$log"; exit 1; }
if kill -0 "$server_pid" 2>/dev/null; then echo "the server (pid $server_pid) outlived npm"; exit 1; fi
echo "smoke ok: ready, then exit 0 on SIGTERM to npm"
