#!/usr/bin/env bash
# Streaming requests per second and latency, measured side by side in one run with wrk:
#   1. directly to one engine emulator,
#   2. through the powerplane gateway to the same emulator,
#   3. through nginx (reverse proxy, buffering off, keep-alive upstream) to the same emulator.
# Each row also gives the CPU time the process serving it spent per request (utime and stime from
# /proc, the nginx master and its worker together; "direct" is the emulator's own).
# Usage: bench/proxy.sh [build_dir] [connections] [seconds]
# Needs: wrk, nginx (scripts/setup installs both); a release build (cmake --preset release).
# On a machine with many cores, the environment can spread the work and pin it (taskset lists):
#   ENGINES=N       N emulators (default 1); "direct" still measures the first one alone. Not a
#                   proxy-against-proxy measure: nginx deals streams round-robin, the gateway
#                   places each where its token is cheapest (fuller batches), and an emulator's
#                   step time depends on its batch.
#   ENGINE_CPUS, PROXY_CPUS, WRK_CPUS   the cores of the emulators, of each proxy (the gateways
#                   and nginx get the same ones), and of wrk.
#   WRK_THREADS     wrk's threads (default 1).
#   PROXY_CPU_QUOTA=F  each proxy (each gateway, nginx's master and worker) in a CPU cgroup of
#                   its own that may use F of one core (CFS quota F x 10 ms per 10 ms; root and
#                   cgroup v1 or v2). On a machine too small to saturate a proxy with the
#                   emulator and wrk beside it, this makes the proxy the bottleneck, each with the
#                   same CPU: throughput is then what a proxy does with that CPU.
#   STREAM_USAGE=1  the streams ask for usage (stream_options.include_usage): the emulator then
#                   does the same work behind either proxy (the gateway always asks for usage).
#   SDK_HEADERS=1   the requests carry the 17 header fields the official `openai` npm client
#                   sends (a 500-byte head), not wrk's three.
#   WARMUP=S        before each measured run, S seconds of the same load on the same proxy,
#                   not counted (default 0). A fresh proxy's first second is slower than its
#                   later ones (new upstream connections; docs/benchmarks.md, session 12); with
#                   WARMUP both proxies are measured warm, as a long-running one is.
#   KEEP_LOGS=DIR   at the end, the processes' logs and each gateway's /metrics go to DIR.
#   ROUNDS=N        N rounds of gateway against nginx (no ledger rows), each with the proxies
#                   started afresh and the order alternated, then each round's ratios and their
#                   medians. One process of the same binary can run a few % faster or slower than
#                   the next for its whole life (docs/benchmarks.md, session 9), so a comparison
#                   needs several processes, not several rows of one.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
build=${1:-build/release}
conns=${2:-64}
secs=${3:-10}
bin=$build/apps/powerplane/powerplane
[ -x "$bin" ] || { echo "build first: cmake --build --preset release" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"
    cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    cp "$work/nginx/error.log" "$KEEP_LOGS/nginx-error.log" 2>/dev/null || true
    for name in gw ledger; do
      port_var=${name}_port
      [ -n "${!port_var:-}" ] && python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
        "http://127.0.0.1:${!port_var}/metrics" >"$KEEP_LOGS/$name-metrics.txt" 2>&1 || true
    done
  fi
  end_processes "${pids[@]}"
  for g in "${cgroups[@]}"; do  # a cgroup can go once its processes have.
    for _ in $(seq 50); do rmdir "$g" 2>/dev/null && break; sleep 0.1; done
  done
  rm -rf "$work"
}
cgroups=()
trap cleanup EXIT


# The emulator runs 20x faster than real time so that a 16-token stream takes ~5 ms: the
# proxies' overhead, not the emulated GPU, is what this measures.
engines=${ENGINES:-1}
wrk_threads=${WRK_THREADS:-1}
# on CPUS: the command prefix that runs a program on the cores CPUS (taskset execs it, so $! is
# the program's PID); nothing when CPUS is empty.
on() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
engine_ports=()
# limit_cpu NAME PID...: moves the processes (all their threads) into a new CPU cgroup that may
# use PROXY_CPU_QUOTA of one core; nothing when it is unset.
limit_cpu() {
  local name=$1; shift
  [ -n "${PROXY_CPU_QUOTA:-}" ] || return 0
  local period=10000 quota dir
  quota=$(awk -v f="$PROXY_CPU_QUOTA" -v p="$period" 'BEGIN { printf "%d", f * p }')
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    dir=/sys/fs/cgroup/pp-bench-$$-$name
    mkdir "$dir" && echo "$quota $period" >"$dir/cpu.max"
  else  # cgroup v1
    dir=/sys/fs/cgroup/cpu/pp-bench-$$-$name
    mkdir "$dir" && echo "$period" >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us"
  fi || { echo "PROXY_CPU_QUOTA: cannot make CPU cgroup $dir (needs root)" >&2; exit 1; }
  cgroups+=("$dir")
  local p
  for p in "$@"; do echo "$p" >"$dir/cgroup.procs"; done
}
for i in $(seq "$engines"); do
  port=$(free_port)
  $(on "${ENGINE_CPUS:-}") "$bin" engine --listen 127.0.0.1:$port --speed 20 --max-batch 1024 \
    --log-level warn >"$work/engine$i.log" 2>&1 & pids+=($!)
  [ "$i" = 1 ] && engine_pid=$!
  wait_port "$port"
  engine_ports+=("$port")
done
engine_port=${engine_ports[0]}
engine_urls=("${engine_ports[@]/#/http://127.0.0.1:}")
nginx_servers=$(printf 'server 127.0.0.1:%s; ' "${engine_ports[@]}")

write_fleet "$work/fleet.toml" "${engine_urls[@]}"
# start_proxies ROUND: the gateway, the ledger gateway and nginx, each on a fresh port (and in a
# CPU cgroup of its own when PROXY_CPU_QUOTA is set); stop_proxies ends them.
start_proxies() {
  local round=$1
  gw_port=$(free_port)
  $(on "${PROXY_CPUS:-}") "$bin" gateway --config "$work/fleet.toml" --listen 127.0.0.1:$gw_port \
    --threads 1 --no-store \
    --log-level warn >>"$work/gateway.log" 2>&1 & pids+=($!)
  gw_pid=$!
  limit_cpu "gateway$round" "$gw_pid"
  wait_port "$gw_port"
  # The same gateway with its tenancy store: every request's ledger row is committed (SQLite
  # WAL) before the response's last bytes leave. Not in ROUNDS mode, which leaves it out.
  ledger_pid=
  if [ "$rounds" -le 1 ]; then
    ledger_port=$(free_port)
    $(on "${PROXY_CPUS:-}") "$bin" gateway --config "$work/fleet.toml" \
      --listen 127.0.0.1:$ledger_port --threads 1 --data-dir "$work/state$round" --log-level warn \
      >>"$work/gateway-ledger.log" 2>&1 & pids+=($!)
    ledger_pid=$!
    limit_cpu "ledger$round" "$ledger_pid"
    wait_port "$ledger_port"
  fi

  nginx_port=$(free_port)
  write_nginx_conf "$work" "$nginx_servers" "$nginx_port"
  $(on "${PROXY_CPUS:-}") nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
  nginx_pid=$!  # the master; its worker is counted as its child.
  wait_port "$nginx_port"
  limit_cpu "nginx$round" "$nginx_pid" $(cat /proc/"$nginx_pid"/task/*/children)
}
stop_proxies() {
  local p
  for p in "$gw_pid" $ledger_pid "$nginx_pid"; do kill "$p" 2>/dev/null || true; done
  for p in "$gw_pid" $ledger_pid "$nginx_pid"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}
rounds=${ROUNDS:-1}
start_proxies 1

write_stream_lua "$work/stream.lua"

# CPU time of a process and its children (nginx's worker): "user system" in clock ticks (from
# /proc/PID/stat, 10 ms steps) and "total" in ns (the sum of its threads' /proc/.../schedstat),
# which is what the per-request figure uses: ticks are too coarse for an 8-second run.
cpu_ticks() {
  local u=0 s=0 ns=0 p t
  for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    read -r pu ps < <(awk '{print $14, $15}' /proc/"$p"/stat)
    u=$((u + pu)); s=$((s + ps))
    for t in /proc/"$p"/task/*/schedstat; do ns=$((ns + $(cut -d' ' -f1 "$t"))); done
  done
  echo "$u $s $ns"
}
hz=$(getconf CLK_TCK)

run() {  # run NAME PORT PID: wrk against PORT; the CPU that PID (and children) spent per request
  local before after
  if [ "${WARMUP:-0}" != 0 ]; then
    $(on "${WRK_CPUS:-}") wrk -t "$wrk_threads" -c "$conns" -d "${WARMUP}s" -s "$work/stream.lua" \
      "http://127.0.0.1:$2/v1/chat/completions" >/dev/null
  fi
  before=$(cpu_ticks "$3")
  out=$($(on "${WRK_CPUS:-}") wrk -t "$wrk_threads" -c "$conns" -d "${secs}s" --latency -s "$work/stream.lua" "http://127.0.0.1:$2/v1/chat/completions")
  after=$(cpu_ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  cpu=$(awk -v b="$before" -v a="$after" -v n="$reqs" -v hz="$hz" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    printf "cpu %5.1f us (user %5.1f, sys %5.1f)", (y[3]-x[3])/1e3/n, (y[1]-x[1])*1e6/hz/n,
           (y[2]-x[2])*1e6/hz/n }')
  printf '%-10s %10s req/s   p50 %8s   p99 %8s   per request: %s   %s\n' "$1" "$rps" "$p50" "$p99" "$cpu" "$errs"
  last_rps=$rps
  last_p99_ms=$(echo "$p99" | awk '/us$/ {printf "%f", $1 / 1000; next} /ms$/ {printf "%f", $1 + 0; next}
    /s$/ {printf "%f", $1 * 1000; next} {print $1}')
}

echo "wrk -t$wrk_threads -c$conns -d${secs}s, 16-token streams, $engines emulator(s) at speed 20" \
  "($(nproc) cores, $(date -u +%F))${PROXY_CPUS:+, proxies on cores $PROXY_CPUS}${PROXY_CPU_QUOTA:+, each proxy limited to $PROXY_CPU_QUOTA of a core}${WARMUP:+, ${WARMUP} s warm-up before each run}"
run direct "$engine_port" "$engine_pid"
if [ "$rounds" -le 1 ]; then
  run gateway "$gw_port" "$gw_pid"
  run gw+ledger "$ledger_port" "$ledger_pid"
  run nginx "$nginx_port" "$nginx_pid"
  run gateway "$gw_port" "$gw_pid"
  run gw+ledger "$ledger_port" "$ledger_pid"
  run nginx "$nginx_port" "$nginx_pid"
  exit 0
fi
ratios=()
for r in $(seq "$rounds"); do
  if [ "$r" -gt 1 ]; then stop_proxies; start_proxies "$r"; fi
  echo "round $r (fresh proxies)"
  if [ $((r % 2)) = 1 ]; then
    run gateway "$gw_port" "$gw_pid"; g_rps=$last_rps; g_p99=$last_p99_ms
    run nginx "$nginx_port" "$nginx_pid"; n_rps=$last_rps; n_p99=$last_p99_ms
  else
    run nginx "$nginx_port" "$nginx_pid"; n_rps=$last_rps; n_p99=$last_p99_ms
    run gateway "$gw_port" "$gw_pid"; g_rps=$last_rps; g_p99=$last_p99_ms
  fi
  ratios+=("$(awk -v a="$g_rps" -v b="$n_rps" -v c="$g_p99" -v d="$n_p99" \
    'BEGIN { printf "%.3f %.3f", a / b, c / d }')")
done
echo "gateway / nginx per round (throughput, p99):"
printf '  %s\n' "${ratios[@]}"
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
t_median=$(printf '%s\n' "${ratios[@]}" | cut -d' ' -f1 | median)
p_median=$(printf '%s\n' "${ratios[@]}" | cut -d' ' -f2 | median)
t_wins=$(printf '%s\n' "${ratios[@]}" | awk '$1 >= 1' | wc -l)
p_wins=$(printf '%s\n' "${ratios[@]}" | awk '$2 <= 1' | wc -l)
echo "median: throughput ${t_median}x, p99 ${p_median}x; throughput >= nginx in $t_wins of" \
  "$rounds rounds, p99 <= nginx in $p_wins of $rounds"
