#!/usr/bin/env python3
"""Grid-event response of the demo fleet under steady interactive load.

Starts `powerplane up` (the demo fleet, engines at real-time speed), keeps N interactive streams
running, then posts EVENTS grid events asking granbury-tx for 50% of its current draw. For each:
the time from the admin API's answer to the first controller action naming the event, and to the
site's import at or under the target, as seen through /admin/fleet (polled every 10 ms), and the
interactive requests that failed during the run.

Usage: bench/grid_event.py [build_dir] [events] [streams]
"""
import json, os, re, subprocess, sys, threading, time, urllib.request

build = sys.argv[1] if len(sys.argv) > 1 else "build/release"
events = int(sys.argv[2]) if len(sys.argv) > 2 else 20
streams = int(sys.argv[3]) if len(sys.argv) > 3 else 8
binary = os.path.join(build, "apps/powerplane/powerplane")
proc = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--no-store", "--log-level", "warn"],
                        stdout=subprocess.PIPE, text=True)
base = None
deadline = time.time() + 30
while time.time() < deadline and base is None:
    line = proc.stdout.readline()
    m = re.search(r"API:\s+(http://127\.0\.0\.1:\d+)/v1", line)
    if m:
        base = m.group(1)
if base is None:
    proc.kill()
    sys.exit("powerplane did not start")

ADMIN = {"Authorization": "Bearer pp-admin-key", "Content-Type": "application/json"}

def call(method, path, body=None, headers=ADMIN):
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")

def site():
    return next(s for s in call("GET", "/admin/fleet")["sites"] if s["id"] == "granbury-tx")

stop = False
ok = failed = 0
lock = threading.Lock()
def load():
    global ok, failed
    body = {"model": "llama-3.1-8b", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "What is a negative price?"}]}
    while not stop:
        try:
            req = urllib.request.Request(base + "/v1/chat/completions", method="POST",
                                         data=json.dumps(body).encode(),
                                         headers={"Authorization": "Bearer pp-demo-key",
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                good = b"[DONE]" in r.read()
        except Exception:
            good = False
        with lock:
            if good: ok += 1
            else: failed += 1

# Mining must pay at every market hour of the run, so that each event starts from the same state
# (miners running, as they are first off): a high hashprice makes it so.
call("POST", "/admin/hashprice", {"usd_per_ph_day": 400})
threads = [threading.Thread(target=load) for _ in range(streams)]
for t in threads: t.start()
time.sleep(3)
first, at_target = [], []
try:
    for i in range(events):
        # Start each event from the restored state: caps off, miners back (they come back last).
        wait_until = time.time() + 20
        before = site()
        while (not before.get("miners_on") or before.get("gpu_cap_w")) and time.time() < wait_until:
            time.sleep(0.1)
            before = site()
        time.sleep(0.5)  # the tick that restarts miners reports the draw from before them.
        before = site()
        target = 0.5 * before["power_kw"]
        t0 = time.perf_counter()
        ev = call("POST", "/admin/grid-events",
                  {"site": "granbury-tx", "target_kw": target, "duration_s": 3, "ramp_s": 10})
        t_answer = time.perf_counter()
        eid = ev["events"][0]["id"]
        t_first = t_target = None
        while time.perf_counter() - t0 < 12 and (t_first is None or t_target is None):
            s = site()
            now = time.perf_counter()
            if t_first is None and any(eid in a for a in s.get("actions", [])):
                t_first = now - t_answer
            if t_target is None and s["event"] and s["event"]["id"] == eid and s["import_kw"] <= target + 1e-9:
                t_target = now - t_answer
            time.sleep(0.01)
        print(f"event {eid}: target {target:.2f} kW, first {t_first}, at target {t_target}", flush=True)
        first.append(t_first if t_first is not None else float("inf"))
        at_target.append(t_target if t_target is not None else float("inf"))
        time.sleep(3)  # the event ends after 3 s.
finally:
    stop = True
    for t in threads: t.join()
    proc.terminate()
    proc.wait(timeout=10)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
print(f"{events} events, {streams} interactive streams, demo fleet, engines at real time")
print(f"first action: p50 {pct(first,50)*1e3:.0f} ms  p99 {pct(first,99)*1e3:.0f} ms  max {max(first)*1e3:.0f} ms")
print(f"at or under target: p50 {pct(at_target,50)*1e3:.0f} ms  p99 {pct(at_target,99)*1e3:.0f} ms  max {max(at_target)*1e3:.0f} ms")
print(f"interactive requests: {ok} completed, {failed} failed")
