#!/usr/bin/env python3
"""How a small budget is shared by gateways sharing one store, when each has clients waiting.

Starts K `powerplane up` processes (the demo fleet, emulated engines) on one SQLite store, makes
a tenant with a small daily budget, then runs C clients per gateway, each sending non-streaming
chat completions without max_tokens (so each reserves the worst case) back to back: on 429
budget_leased_elsewhere it waits the Retry-After, on 503 a second; it stops at
insufficient_quota. Prints what each gateway served, and what the ledger charged.

    python3 bench/budget_fairness.py [--build build/release] [--gateways 3] [--clients 2]
                                     [--budget 0.03] [--seconds 120]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

ADMIN = "pp-admin-key"


def call(url, key, body=None, method=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Authorization", "Bearer " + key)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def start(binary, work, store, i):
    out = open(os.path.join(work, f"gw{i}.log"), "w")
    p = subprocess.Popen([binary, "up", "--listen", "127.0.0.1:0", "--engine-speed", "20",
                          "--store", "sqlite:" + store, "--data-dir", os.path.join(work, f"gw{i}"),
                          "--log-level", "warn"],
                         stdout=subprocess.PIPE, stderr=out, text=True)
    deadline = time.time() + 60
    banner = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        banner += line
        m = re.search(r"API:\s+(http://127\.0\.0\.1:\d+)/v1", banner)
        if m:
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p, m.group(1)
    p.kill()
    raise RuntimeError(f"gateway {i} did not start: {banner}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--seconds", type=float, default=120)
    a = ap.parse_args()
    binary = os.path.join(a.build, "apps/powerplane/powerplane")
    work = tempfile.mkdtemp(prefix="pp-fair-")
    store = os.path.join(work, "shared.db")
    procs = []
    try:
        for i in range(a.gateways):
            procs.append(start(binary, work, store, i))
        root = procs[0][1]
        s, _, b = call(root + "/admin/tenants", ADMIN,
                       {"id": "fair", "budget_usd": a.budget, "budget_period": "day"})
        assert s == 200, b
        s, _, b = call(root + "/admin/keys", ADMIN, {"tenant": "fair"})
        assert s == 200, b
        key = json.loads(b)["key"]
        served = [0] * a.gateways
        waits = [0] * a.gateways
        first_ok = [None] * a.gateways
        lock = threading.Lock()
        t0 = time.time()
        stop_at = t0 + a.seconds

        def client(g):
            url = procs[g][1] + "/v1/chat/completions"
            body = {"model": "llama-3.1-8b",
                    "messages": [{"role": "user", "content": "What does a megawatt-hour buy?"}]}
            while time.time() < stop_at:
                s, h, b = call(url, key, body)
                if s == 200:
                    with lock:
                        served[g] += 1
                        if first_ok[g] is None:
                            first_ok[g] = time.time() - t0
                    continue
                code = ""
                try:
                    code = json.loads(b)["error"].get("code") or json.loads(b)["error"]["type"]
                except Exception:
                    pass
                if s == 429 and code == "budget_leased_elsewhere":
                    with lock:
                        waits[g] += 1
                    time.sleep(float(h.get("Retry-After", h.get("retry-after", "1"))))
                elif s == 503:
                    time.sleep(1)
                else:
                    return  # insufficient_quota (or another refusal): this client is done.

        threads = [threading.Thread(target=client, args=(g,))
                   for g in range(a.gateways) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - t0
        s, _, b = call(root + "/admin/ledger?tenant=fair", ADMIN)
        rows = [json.loads(line) for line in b.splitlines() if line.strip()]
        charged = sum(r["charged_usd"] for r in rows)
        print(f"gateways {a.gateways}, clients {a.clients} each, budget {a.budget} USD, "
              f"{took:.1f} s")
        for g in range(a.gateways):
            print(f"  gateway {g}: served {served[g]}, budget_leased_elsewhere {waits[g]}, "
                  f"first 200 at {first_ok[g] if first_ok[g] is None else round(first_ok[g], 2)} s")
        print(f"  ledger: {len(rows)} rows, charged {charged:.6f} USD "
              f"({100 * charged / a.budget:.1f}% of the budget)")
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
