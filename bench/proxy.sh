#!/usr/bin/env bash
# Streaming requests per second and latency, measured side by side in one run with wrk:
#   1. directly to one engine emulator,
#   2. through the powerplane gateway to the same emulator,
#   3. through nginx (reverse proxy, buffering off, keep-alive upstream) to the same emulator.
# Each row also gives the CPU time the process serving it spent per request (utime and stime from
# /proc, the nginx master and its worker together; "direct" is the emulator's own).
# Usage: bench/proxy.sh [build_dir] [connections] [seconds]
# Needs: wrk, nginx (scripts/setup installs both); a release build (cmake --preset release).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
conns=${2:-64}
secs=${3:-10}
bin=$build/apps/powerplane/powerplane
[ -x "$bin" ] || { echo "build first: cmake --build --preset release" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # wait_port PORT: up to 10 s
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2; exit 1
}

# The emulator runs 20x faster than real time so that a 16-token stream takes ~5 ms: the
# proxies' overhead, not the emulated GPU, is what this measures.
engine_port=$(free_port)
"$bin" engine --listen 127.0.0.1:$engine_port --speed 20 --max-batch 1024 --log-level warn \
  >"$work/engine.log" 2>&1 & pids+=($!)
engine_pid=$!
wait_port "$engine_port"

gw_port=$(free_port)
cat >"$work/fleet.toml" <<TOML
[gateway]
admin_key = "bench-admin"
[[sites]]
id = "bench"
jurisdiction = "US"
price = 30.0
  [[sites.endpoints]]
  urls = ["http://127.0.0.1:$engine_port"]
  gpu = "h200"
  max_batch = 1024
  max_queue = 4096
[[tenants]]
id = "bench"
keys = ["bench-key"]
ttft_target_ms = 5000
tpot_target_ms = 1000
TOML
"$bin" gateway --config "$work/fleet.toml" --listen 127.0.0.1:$gw_port --threads 1 --no-store \
  --log-level warn >"$work/gateway.log" 2>&1 & pids+=($!)
gw_pid=$!
wait_port "$gw_port"
# The same gateway with its tenancy store: every request's ledger row is committed (SQLite WAL)
# before the response's last bytes leave.
ledger_port=$(free_port)
"$bin" gateway --config "$work/fleet.toml" --listen 127.0.0.1:$ledger_port --threads 1 \
  --data-dir "$work/state" --log-level warn >"$work/gateway-ledger.log" 2>&1 & pids+=($!)
ledger_pid=$!
wait_port "$ledger_port"

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  upstream engine { server 127.0.0.1:$engine_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      tcp_nodelay on;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
nginx_pid=$!  # the master; its worker is counted as its child.
wait_port "$nginx_port"

cat >"$work/stream.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
wrk.body = '{"model":"llama-3.1-8b","stream":true,"max_tokens":16,' ..
           '"messages":[{"role":"user","content":"How cheap is a token at 3 a.m. in West Texas?"}]}'
LUA

# CPU time of a process and its children (nginx's worker) in clock ticks: "user system".
cpu_ticks() {
  local u=0 s=0 p
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    read -r pu ps < <(awk '{print $14, $15}' /proc/"$p"/stat)
    u=$((u + pu)); s=$((s + ps))
  done
  echo "$u $s"
}
hz=$(getconf CLK_TCK)

run() {  # run NAME PORT PID: wrk against PORT; the CPU that PID (and children) spent per request
  local before after
  before=$(cpu_ticks "$3")
  out=$(wrk -t 1 -c "$conns" -d "${secs}s" --latency -s "$work/stream.lua" "http://127.0.0.1:$2/v1/chat/completions")
  after=$(cpu_ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  cpu=$(awk -v b="$before" -v a="$after" -v n="$reqs" -v hz="$hz" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    printf "user %5.1f us  sys %5.1f us", (y[1]-x[1])*1e6/hz/n, (y[2]-x[2])*1e6/hz/n }')
  printf '%-10s %10s req/s   p50 %8s   p99 %8s   per request: %s   %s\n' "$1" "$rps" "$p50" "$p99" "$cpu" "$errs"
}

echo "wrk -t1 -c$conns -d${secs}s, 16-token streams, emulator at speed 20 ($(nproc) cores, $(date -u +%F))"
run direct "$engine_port" "$engine_pid"
run gateway "$gw_port" "$gw_pid"
run gw+ledger "$ledger_port" "$ledger_pid"
run nginx "$nginx_port" "$nginx_pid"
run gateway "$gw_port" "$gw_pid"
run gw+ledger "$ledger_port" "$ledger_pid"
run nginx "$nginx_port" "$nginx_pid"
