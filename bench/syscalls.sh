#!/usr/bin/env bash
# System calls per request, gateway against nginx, each proxying the same engine emulator:
# wrk streams 16-token chat completions through each in turn (a 2 s warm-up, then `seconds`
# counted) while `perf stat` counts the proxy's syscalls:sys_enter_* tracepoints; prints each
# proxy's calls per request, the most frequent first. Kernel time is most of a proxy's CPU per
# request on small VMs, so this says where it goes without the noise of timings.
# Usage: bench/syscalls.sh [connections] [seconds]   (default 256 5)
# Needs: wrk and nginx (scripts/setup), perf (apt-get install linux-perf) with tracefs mounted
# (/sys/kernel/tracing), root; a release build. The gateway runs --no-store --threads 1; nginx
# one worker with the configuration bench/proxy.sh uses. Pinned: engine and wrk to core 0, the
# proxies to core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }
bin=${BIN:-build/release/apps/powerplane/powerplane}
conns=${1:-256}; secs=${2:-5}
work=$(mktemp -d); pids=()
trap 'end_processes "${pids[@]}"; rm -rf $work' EXIT
ep=$(free_port)
taskset -c 0 $bin engine --listen 127.0.0.1:$ep --speed 20 --max-batch 1024 --log-level warn >$work/e.log 2>&1 & pids+=($!)
wait_port $ep
write_fleet $work/fleet.toml http://127.0.0.1:$ep
gp=$(free_port)
taskset -c 1 $bin gateway --config $work/fleet.toml --listen 127.0.0.1:$gp --threads 1 --no-store --log-level warn >$work/g.log 2>&1 & pids+=($!); gpid=$!
wait_port $gp
np=$(free_port)
write_nginx_conf "$work" "server 127.0.0.1:$ep;" "$np"
taskset -c 1 nginx -c $work/nginx.conf -g 'daemon off;' & pids+=($!); npid=$!
wait_port $np
nworker=$(cat /proc/$npid/task/*/children)
write_stream_lua $work/stream.lua
for pair in "gateway $gp $gpid" "nginx $np $nworker"; do
  set -- $pair
  taskset -c 0 wrk -t1 -c$conns -d2s -s $work/stream.lua http://127.0.0.1:$2/v1/chat/completions >/dev/null
  perf stat -x, -e 'syscalls:sys_enter_*' -p $3 -o $work/perf.txt &
  ppid=$!
  out=$(taskset -c 0 wrk -t1 -c$conns -d${secs}s -s $work/stream.lua http://127.0.0.1:$2/v1/chat/completions)
  kill -INT $ppid; wait $ppid || true
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "== $1: $reqs requests"
  awk -F, -v r=$reqs '$1+0>0 {printf "%8.2f %s\n", $1/r, $3; t+=$1} END {printf "%8.2f total per request\n", t/r}' $work/perf.txt | sort -rn | head -14
done
