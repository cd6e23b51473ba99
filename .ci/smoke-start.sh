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
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/health/ready"; echo
# `npm start` built the web app too: the page is served at /.
curl -fsS "http://127.0.0.1:$port/" | grep -q '<title>Switchboard</title>' || { echo "no web app at /"; cat "$log"; exit 1; }
# npm does not forward SIGTERM to its child (containers run `node dist/src/server.js` directly,
# see docs): signal the server process itself, whose pid is in its log lines.
server_pid="$(grep -o '"pid":[0-9]*' "$log" | head -n1 | cut -d: -f2)"
kill -TERM "$server_pid"
status=0; wait $pid || status=$?
if [ "$status" -ne 0 ]; then echo "server exited with $status"; cat "$log"; exit 1; fi
grep -q '"msg":"shutting down"' "$log" || { echo "no graceful shutdown in the log"; cat "$log"; exit 1; }
echo "smoke ok: ready, then exit 0 on SIGTERM"
