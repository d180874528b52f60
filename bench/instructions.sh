#!/usr/bin/env bash
# User-space instructions per streaming request through the gateway, counted by callgrind
# (valgrind), for one or more powerplane binaries against the same engine emulator. Unlike
# time, an instruction count hardly moves between runs or processes on a noisy machine, so a
# change to the gateway's own code can be judged by it (docs/benchmarks.md, session 10). It
# counts nothing in the kernel: the system calls, about two thirds of the gateway's CPU, need
# bench/proxy.sh.
# Usage: bench/instructions.sh BINARY...   (e.g. build/release/apps/powerplane/powerplane)
# Each gateway (--threads 1 --no-store) runs under callgrind with instrumentation off for 3 s of
# warm-up, then on for SECONDS (default 6) of wrk -c16 16-token streams; the figure is all the
# process's instructions in that window over the requests wrk completed in it.
# STREAM_USAGE=1 and SDK_HEADERS=1 shape the requests as in bench/proxy.sh.
# Needs: valgrind, wrk (scripts/setup).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
[ $# -ge 1 ] || { echo "usage: bench/instructions.sh BINARY..." >&2; exit 2; }
secs=${SECONDS_MEASURED:-6}
work=$(mktemp -d)
pids=()
cleanup() {
  end_processes "${pids[@]}"
  rm -rf "$work"
}
trap cleanup EXIT

engine_port=$(free_port)
"$1" engine --listen 127.0.0.1:$engine_port --speed 20 --max-batch 1024 --log-level warn \
  >"$work/engine.log" 2>&1 & pids+=($!)
wait_port "$engine_port"
write_fleet "$work/fleet.toml" "http://127.0.0.1:$engine_port"
write_stream_lua "$work/stream.lua"

for bin in "$@"; do
  port=$(free_port)
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.%p" \
    "$bin" gateway --config "$work/fleet.toml" --listen 127.0.0.1:$port --threads 1 --no-store \
    --data-dir "$work/state" --log-level warn >"$work/gateway.log" 2>&1 & pids+=($!)
  gw=$!
  wait_port "$port" 300  # a gateway under valgrind starts slowly.
  url=http://127.0.0.1:$port/v1/chat/completions
  wrk -t1 -c16 -d3s -s "$work/stream.lua" "$url" >/dev/null
  callgrind_control -i on "$gw" >/dev/null 2>&1
  wrk -t1 -c16 -d"${secs}s" -s "$work/stream.lua" "$url" >"$work/wrk.txt"
  callgrind_control -i off "$gw" >/dev/null 2>&1
  callgrind_control -d "$gw" >/dev/null 2>&1
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
  instructions=$(callgrind_annotate "$work/cg.$gw.1" 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  kill "$gw"
  printf '%-50s %8d requests  %8d instructions per request\n' "$bin" "$requests" \
    $((instructions / requests))
  rm -f "$work"/cg.*
done
