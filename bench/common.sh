# Shared by bench/proxy.sh and bench/instructions.sh (sourced, not run): ports, the processes a
# script started, and the benchmark's fleet and wrk script.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [TENTHS]: until something listens on PORT, for at most TENTHS x 0.1 s (default
# 100: 10 s); exits the script when nothing does.
wait_port() {
  for _ in $(seq "${2:-100}"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  exit 1
}

# end_processes PID...: asks each to end, then gives each up to 10 s to (an instrumented build,
# scripts/build-pgo, writes its profile then).
end_processes() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}

# write_fleet FILE URL...: one site, one endpoint group of the given engine URLs (H200, room for
# 1,024 streams each), and the tenant "bench" with key "bench-key".
write_fleet() {
  local file=$1; shift
  local urls
  urls=$(printf '"%s", ' "$@")
  cat >"$file" <<TOML
[gateway]
admin_key = "bench-admin"
[[sites]]
id = "bench"
jurisdiction = "US"
price = 30.0
  [[sites.endpoints]]
  count = $#
  urls = [${urls%, }]
  gpu = "h200"
  max_batch = 1024
  max_queue = 4096
[[tenants]]
id = "bench"
keys = ["bench-key"]
ttft_target_ms = 5000
tpot_target_ms = 1000
TOML
}

# write_stream_lua FILE: wrk POSTs a streaming chat completion of 16 tokens as tenant "bench".
# With STREAM_USAGE=1 the request asks for usage (stream_options.include_usage), so the engine
# does the same work behind either proxy: the gateway asks for usage on every stream to meter
# it, and a client that does not want it has the engine's usage chunk and "usage": null fields
# removed by the gateway. With SDK_HEADERS=1 it also sends the header fields the official
# `openai` npm client (6.49) sends (17 fields, a 500-byte head, as captured from it).
write_stream_lua() {
  local options="" sdk=""
  [ "${STREAM_USAGE:-0}" = 1 ] && options='"stream_options":{"include_usage":true},'
  if [ "${SDK_HEADERS:-0}" = 1 ]; then
    sdk='wrk.headers["Connection"] = "keep-alive"
wrk.headers["Accept"] = "application/json"
wrk.headers["User-Agent"] = "OpenAI/JS 6.49.0"
wrk.headers["X-Stainless-Retry-Count"] = "0"
wrk.headers["X-Stainless-Lang"] = "js"
wrk.headers["X-Stainless-Package-Version"] = "6.49.0"
wrk.headers["X-Stainless-OS"] = "Linux"
wrk.headers["X-Stainless-Arch"] = "x64"
wrk.headers["X-Stainless-Runtime"] = "node"
wrk.headers["X-Stainless-Runtime-Version"] = "v20.20.2"
wrk.headers["Accept-Language"] = "*"
wrk.headers["Sec-Fetch-Mode"] = "cors"
wrk.headers["Accept-Encoding"] = "gzip, deflate"'
  fi
  cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
$sdk
wrk.body = '{"model":"llama-3.1-8b","stream":true,"max_tokens":16,$options' ..
           '"messages":[{"role":"user","content":"How cheap is a token at 3 a.m. in West Texas?"}]}'
LUA
}

# write_nginx_conf DIR SERVERS PORT: DIR/nginx.conf, nginx as the benchmarks run it: one worker,
# a reverse proxy on 127.0.0.1:PORT to the upstream SERVERS ("server 127.0.0.1:P;" each) with
# keep-alive, buffering off; its temporary files and error log under DIR/nginx.
write_nginx_conf() {
  mkdir -p "$1/nginx"
  cat >"$1/nginx.conf" <<NGINX
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/nginx;
  proxy_temp_path $1/nginx;
  upstream engine { $2 keepalive 256; }
  server {
    listen 127.0.0.1:$3;
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
}

# start_engine_and_proxies WORK: one engine emulator (speed 20) pinned to core 0, and the gateway
# (--no-store, one thread) and nginx (one worker) in front of it, both pinned to core 1; the
# bench tenant's wrk script in WORK/stream.lua. Sets ep (the engine's port), gp and gpid (the
# gateway's port and pid), np and nworker (nginx's port and its worker's pid); adds every
# process to the caller's `pids`.
start_engine_and_proxies() {
  local work=$1 bin=${BIN:-build/release/apps/powerplane/powerplane}
  ep=$(free_port)
  taskset -c 0 "$bin" engine --listen 127.0.0.1:$ep --speed 20 --max-batch 1024 --log-level warn \
    >"$work/e.log" 2>&1 & pids+=($!)
  wait_port "$ep"
  write_fleet "$work/fleet.toml" "http://127.0.0.1:$ep"
  gp=$(free_port)
  taskset -c 1 "$bin" gateway --config "$work/fleet.toml" --listen 127.0.0.1:$gp --threads 1 \
    --no-store --log-level warn >"$work/g.log" 2>&1 & pids+=($!)
  gpid=$!
  wait_port "$gp"
  np=$(free_port)
  write_nginx_conf "$work" "server 127.0.0.1:$ep;" "$np"
  taskset -c 1 nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
  local npid=$!
  wait_port "$np"
  nworker=$(cat /proc/$npid/task/*/children)
  write_stream_lua "$work/stream.lua"
}
