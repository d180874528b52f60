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
conns=${1:-256}; secs=${2:-5}
work=$(mktemp -d); pids=()
trap 'end_processes "${pids[@]}"; rm -rf $work' EXIT
start_engine_and_proxies "$work"
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
