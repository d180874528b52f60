#!/usr/bin/env bash
# Gateway against nginx when the proxy's core is shared with a busy process (a CPU hog pinned to
# the same core), as a VM's noisy neighbour or a throttled container shares it: wrk streams
# 16-token chat completions through each in turn, `rounds` times, and prints each run's
# throughput and latency percentiles (p50, p90, p99, max). A proxy that spends its CPU in bursts
# shows a longer tail here than a proxy whose p99 looks the same on a quiet core.
# Usage: bench/contended.sh [connections] [seconds] [rounds]   (default 256 6 3)
# Needs: wrk and nginx (scripts/setup); a release build. Engine and wrk on core 0; the proxies
# and the hog on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
conns=${1:-256}; secs=${2:-6}; rounds=${3:-3}
work=$(mktemp -d); pids=()
trap 'end_processes "${pids[@]}"; rm -rf $work' EXIT
start_engine_and_proxies "$work"
taskset -c 1 python3 -c 'while True: pass' & pids+=($!)
for round in $(seq "$rounds"); do
  for pair in "gateway $gp" "nginx $np"; do
    set -- $pair
    out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/stream.lua" \
      "http://127.0.0.1:$2/v1/chat/completions")
    pct() { echo "$out" | awk -v p="$1" '$1==p {print $2}'; }
    printf '%-8s round %s  %10s req/s  p50 %9s  p90 %9s  p99 %9s  max %9s\n' "$1" "$round" \
      "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "$(pct 50%)" "$(pct 90%)" "$(pct 99%)" \
      "$(echo "$out" | awk '/Latency/ {print $4}')"
  done
done
