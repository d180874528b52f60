#!/usr/bin/env python3
"""Concurrent slow streams held through the gateway, and the memory it takes to hold them.

Starts engine emulators (slowed down, so that every stream stays open for the whole run) and one
gateway (`--threads 1 --no-store`) in front of them, all on 127.0.0.1; opens N streaming chat
completions through the gateway, ramped up; checks that each answered `HTTP/1.1 200` and sent at
least one `data:` event; then, with all N open, samples the gateway's VmRSS and VmHWM and the
engines' RSS from /proc/PID/status a few times over the hold period, and counts the streams still
open and still receiving. Prints a table; exits 1 when fewer than N streams were held.

Usage: bench/slow_streams.py [--build build/release] [--streams 10000] [--engines 16]
       [--gateways K] ...
With --gateways K > 1, K gateway processes listen on one port (`--reuse-port`, SO_REUSEPORT) and
the kernel spreads the streams over them; memory and descriptors are summed over the K.
The emulator slows prefill and decode alike, so the defaults (16 engines at speed 0.01, 200 new
streams a second) keep prefill well under the engines' capacity during the ramp, and each stream
at about one token every 2-3 s afterwards.
Standard library only. The gateway needs two descriptors per stream (client and upstream), so
the hard RLIMIT_NOFILE must exceed 2N; the script raises the soft limit of every process it starts
to the hard limit (it cannot raise the hard limit without CAP_SYS_RESOURCE) and says so if short.
"""

import argparse
import asyncio
import datetime
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROMPT = "How cheap is a token at 3 a.m. in West Texas?"
PROMPT_TOKENS_BOUND = 64  # generous: the chat template adds a few tokens to the prompt.


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build/release", help="build directory")
    p.add_argument("--streams", type=int, default=10000, help="concurrent streams (N)")
    p.add_argument("--engines", type=int, default=16, help="engine emulator processes")
    p.add_argument("--gateways", type=int, default=1,
                   help="gateway processes sharing one port (--reuse-port) when more than one")
    p.add_argument("--speed", type=float, default=0.01, help="engine time factor (slow)")
    p.add_argument("--max-tokens", type=int, default=4000, help="max_tokens of each stream")
    p.add_argument("--ramp", type=float, default=200, help="new connections per second")
    p.add_argument("--hold", type=float, default=10, help="seconds to sample with all N open")
    p.add_argument("--samples", type=int, default=5, help="memory samples over --hold")
    p.add_argument("--open-timeout", type=float, default=60,
                   help="seconds for one stream to get its status line and first data: event")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, fleet file)")
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited ({proc.returncode}) before port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout_s} s")


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (in this process and, via preexec, children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def listening(pid, port):
    """True when process `pid` holds a TCP socket listening on `port` (/proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                inodes.add(cols[9])
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link == f"socket:[{inode}]" for link in links for inode in inodes)


def wait_listening(pid, proc, port, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway {pid} exited ({proc.returncode}) before listening")
        if listening(pid, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"gateway {pid} did not listen on {port} within {timeout_s} s")


def proc_status(pid):
    """VmRSS and VmHWM in KiB from /proc/PID/status (None when the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        return None
    return out


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def mib(kib):
    return kib / 1024.0


class Stream:
    __slots__ = ("status", "first_data", "bytes", "closed", "error", "writer")

    def __init__(self):
        self.status = None       # the status line's code
        self.first_data = False  # a data: event arrived
        self.bytes = 0           # body bytes read so far
        self.closed = False      # the gateway ended the response (EOF) after the first event
        self.error = None        # why it failed before or after its first event
        self.writer = None


async def run_stream(i, s, port, body, open_timeout_s):
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Authorization: Bearer bench-key\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-request-id: slow-{i}\r\n"
        "\r\n"
    ).encode() + body
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 16), open_timeout_s)
        s.writer = writer
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), open_timeout_s)
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split()
        s.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        if not status_line.startswith("HTTP/1.1 200"):
            rest = await asyncio.wait_for(reader.read(300), 2)
            s.error = f"{status_line}: {rest[:200]!r}"
            return
        seen = b""
        while b"data:" not in seen:
            chunk = await asyncio.wait_for(reader.read(1 << 16), open_timeout_s)
            if not chunk:
                s.error = "EOF before the first data: event"
                return
            s.bytes += len(chunk)
            seen = seen[-8:] + chunk
        s.first_data = True
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                s.closed = True
                return
            s.bytes += len(chunk)
    except asyncio.CancelledError:
        raise
    except asyncio.TimeoutError:
        s.error = "timeout (status line or first data: event)"
    except Exception as e:  # a refused or reset connection is a result, not a crash
        s.error = f"{type(e).__name__}: {e}"


def held(streams):
    return sum(1 for s in streams if s.first_data and not s.closed and s.error is None)


async def client(args, port, gws, engines, report):
    body = (
        '{"model":"llama-3.1-8b","stream":true,"max_tokens":%d,'
        '"messages":[{"role":"user","content":"%s"}]}' % (args.max_tokens, PROMPT)
    ).encode()
    n = args.streams
    streams = [Stream() for _ in range(n)]
    tasks = []
    t0 = time.monotonic()
    batch = max(1, int(args.ramp / 10))
    for start in range(0, n, batch):
        for i in range(start, min(n, start + batch)):
            tasks.append(asyncio.create_task(
                run_stream(i, streams[i], port, body, args.open_timeout)))
        await asyncio.sleep(max(0.0, t0 + (start + batch) / args.ramp - time.monotonic()))
    # Every stream has its first event, or has failed, within the open timeout of its start.
    deadline = time.monotonic() + args.open_timeout + 5
    while time.monotonic() < deadline:
        if all(s.first_data or s.error is not None for s in streams):
            break
        await asyncio.sleep(0.2)
    report["ramp_s"] = time.monotonic() - t0
    report["opened"] = sum(1 for s in streams if s.first_data)

    bytes_before = [s.bytes for s in streams]
    samples = []
    interval = args.hold / max(1, args.samples)
    for k in range(args.samples):
        await asyncio.sleep(interval)
        gs = [proc_status(g.pid) or {} for g in gws]
        es = [proc_status(e.pid) or {} for e in engines]
        samples.append({
            "t": time.monotonic() - t0,
            "open": held(streams),
            "gw_rss": sum(g.get("VmRSS", 0) for g in gs),
            "gw_hwm": sum(g.get("VmHWM", 0) for g in gs),
            "gw_fds": sum(fd_count(g.pid) for g in gws),
            "gw_each": [g.get("VmRSS", 0) for g in gs],
            "eng_rss": sum(e.get("VmRSS", 0) for e in es),
            "eng_max": max((e.get("VmRSS", 0) for e in es), default=0),
        })
    receiving = sum(1 for s, b in zip(streams, bytes_before)
                    if s.first_data and s.error is None and not s.closed and s.bytes > b)
    report["hold_bytes"] = sum(s.bytes for s in streams) - sum(bytes_before)
    report["hold_s"] = time.monotonic() - t0 - report["ramp_s"]
    report.update(samples=samples, receiving=receiving, held=held(streams))
    errors = {}
    for s in streams:
        if s.error is not None:
            key = s.error if len(s.error) < 160 else s.error[:160] + "..."
            errors[key] = errors.get(key, 0) + 1
    report["errors"] = errors
    report["ended_early"] = sum(1 for s in streams if s.closed)
    for s in streams:
        if s.writer is not None:
            s.writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def main():
    args = parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    binary = os.path.join(args.build, "apps/powerplane/powerplane")
    if not os.access(binary, os.X_OK):
        sys.exit(f"build first: cmake --build --preset release ({binary} missing)")
    n = args.streams
    soft, hard = raise_nofile()
    if soft < n + 64:
        sys.exit(f"RLIMIT_NOFILE is {soft} (hard {hard}): the client needs more than {n}")
    k_gw = max(1, args.gateways)
    if hard < 2 * n / k_gw + 64:
        print(f"warning: hard RLIMIT_NOFILE {hard} < 2N/K+64 = {2 * n // k_gw + 64}: {k_gw} gateway "
              f"process(es) (one client and one upstream socket per stream) cannot hold {n} "
              f"streams here; more --gateways share the load", file=sys.stderr)

    per_engine = math.ceil(n / args.engines)
    # The router fills the fullest admissible endpoint first; with no queue (max_queue = 0) a
    # full engine is skipped, so the streams spread over the engines and all start decoding.
    batch = per_engine + 64
    # Each gateway admits at most `batch` streams per engine by its own count (it also sees the
    # engines' reported load, but only between probes): an engine takes K times that, so that no
    # stream waits in an engine's queue when K gateways share the engines.
    engine_batch = batch * k_gw
    kv_tokens = batch * (args.max_tokens + PROMPT_TOKENS_BOUND)
    work = tempfile.mkdtemp(prefix="slow_streams.")
    procs = []
    report = {}
    ok = False
    try:
        preexec = raise_nofile
        engines = []
        ports = []
        for k in range(args.engines):
            port = free_port()
            log = open(os.path.join(work, f"engine{k}.log"), "w")
            p = subprocess.Popen(
                [binary, "engine", "--listen", f"127.0.0.1:{port}", "--speed", str(args.speed),
                 "--max-batch", str(engine_batch), "--kv-tokens", str(kv_tokens * k_gw), "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
            procs.append(p)
            engines.append(p)
            ports.append(port)
        for port, p in zip(ports, engines):
            wait_port(port, p)
        urls = ", ".join(f'"http://127.0.0.1:{port}"' for port in ports)
        fleet = os.path.join(work, "fleet.toml")
        with open(fleet, "w") as f:
            f.write(f"""[gateway]
admin_key = "bench-admin"
# The engines run far slower than real time on purpose: no latency breaker.
latency_breaker = false
[[sites]]
id = "bench"
jurisdiction = "US"
price = 30.0
  [[sites.endpoints]]
  urls = [{urls}]
  gpu = "h200"
  max_batch = {batch}
  max_queue = 0
  kv_tokens = {kv_tokens}
[[tenants]]
id = "bench"
keys = ["bench-key"]
ttft_target_ms = 600000
tpot_target_ms = 600000
""")
        gw_port = free_port()
        gws = []
        for i in range(k_gw):
            # More than one: each listens on the same port (SO_REUSEPORT) and the kernel spreads
            # the client's connections over them.
            gw = subprocess.Popen(
                [binary, "gateway", "--config", fleet, "--listen", f"127.0.0.1:{gw_port}",
                 "--threads", "1", "--no-store", "--log-level", "warn"] +
                (["--reuse-port"] if k_gw > 1 else []),
                stdout=open(os.path.join(work, f"gateway{i}.log"), "w"),
                stderr=subprocess.STDOUT, preexec_fn=preexec)
            procs.append(gw)
            gws.append(gw)
            wait_listening(gw.pid, gw, gw_port)
        gw = gws[0]
        time.sleep(1)
        idle_each = [proc_status(g.pid) or {"VmRSS": 0, "VmHWM": 0} for g in gws]
        idle = {key: sum(i[key] for i in idle_each) for key in ("VmRSS", "VmHWM")}
        idle_eng = sum((proc_status(e.pid) or {}).get("VmRSS", 0) for e in engines)
        gw_limit = open(f"/proc/{gw.pid}/limits").read()
        gw_nofile = [l for l in gw_limit.splitlines() if l.startswith("Max open files")][0].split()[3]

        asyncio.run(client(args, gw_port, gws, engines, report))
        alive = all(g.poll() is None for g in gws)

        samples = report["samples"]
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        gateways = "gateway" if k_gw == 1 else f"{k_gw} gateways (--reuse-port, one port)"
        print(f"{n} slow streams through powerplane {gateways} --threads 1, {args.engines} engine(s) at "
              f"speed {args.speed}, max_tokens {args.max_tokens}; {os.cpu_count()} cores, {date}; "
              f"gateway RLIMIT_NOFILE {gw_nofile}" + (" each; RSS and fds summed over them"
                                                      if k_gw > 1 else ""))
        print(f"ramp: {report['opened']}/{n} streams got 200 and a data: event in "
              f"{report['ramp_s']:.1f} s")
        print(f"{'t (s)':>7} {'open':>7} {'gw fds':>7} {'gw RSS MiB':>11} {'gw HWM MiB':>11} "
              f"{'engines RSS MiB':>16}")
        print(f"{'idle':>7} {0:>7} {'':>7} {mib(idle['VmRSS']):>11.1f} {mib(idle['VmHWM']):>11.1f} "
              f"{mib(idle_eng):>16.1f}")
        for s in samples:
            print(f"{s['t']:>7.1f} {s['open']:>7} {s['gw_fds']:>7} {mib(s['gw_rss']):>11.1f} "
                  f"{mib(s['gw_hwm']):>11.1f} {mib(s['eng_rss']):>16.1f}")
        rss_n = max(s["gw_rss"] for s in samples)
        hwm = max(s["gw_hwm"] for s in samples)
        if report["held"] < 10000:
            goal = f"not shown ({report['held']} held)"
        else:
            goal = "met" if rss_n < 1 << 20 else "NOT met"
        per_stream = (rss_n - idle["VmRSS"]) * 1024.0 / max(1, report["held"])
        print(f"held at the end: {report['held']}/{n}; receiving during the hold: "
              f"{report['receiving']}; ended early: {report['ended_early']}; "
              f"failed: {sum(report['errors'].values())}; gateway alive: {alive}")
        print(f"relayed during the hold: {report['hold_bytes'] / report['hold_s'] / 1024:.0f} KiB/s "
              f"({report['hold_bytes'] / max(1, report['receiving']):.0f} B per receiving stream)")
        print(f"gateway RSS at N {mib(rss_n):.1f} MiB (HWM {mib(hwm):.1f} MiB), idle "
              f"{mib(idle['VmRSS']):.1f} MiB: {per_stream / 1024:.1f} KiB per held stream; "
              f"goal (10,000 held, RSS < 1024 MiB): {goal}")
        if k_gw > 1:
            last = samples[-1]["gw_each"]
            print("gateway RSS each at the last sample: " +
                  ", ".join(f"{mib(r):.1f} MiB" for r in last))
        for err, count in sorted(report["errors"].items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {count:>6} x {err}")
        ok = alive and report["held"] >= n and report["receiving"] >= n
        if not ok:
            for k in range(k_gw):
                with open(os.path.join(work, f"gateway{k}.log")) as f:
                    tail = f.readlines()[-10:]
                if tail:
                    print(f"gateway {k} log (last lines):\n" + "".join("  " + l for l in tail))
    finally:
        stop(procs)
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
