"""Bounded load test of `tumorseg serve` on loopback: N clients for T seconds, real slices.

usage: python benchmarks/load_test.py [--clients 4] [--seconds 60] [--data ../shared/data/lgg]
Starts its own server on a free port, reports requests/s, p50/p95/p99 latency, errors and the
server's memory over time, and writes benchmarks/results/load-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--data", default="../shared/data/lgg")
    args = ap.parse_args()
    slices = sorted(p for p in Path(args.data).glob("*/*.png") if not p.stem.endswith("_mask"))[:200]
    payloads = [p.read_bytes() for p in slices]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tumorseg", "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/api/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        httpx.post(url + "/api/v1/segment", files={"file": ("w.png", payloads[0])}, timeout=60)  # warm-up
        latencies, errors, memory = [], [0], [rss_mb(proc.pid)]
        stop = time.perf_counter() + args.seconds
        lock = threading.Lock()

        def client(i: int) -> None:
            with httpx.Client(timeout=60) as c:
                k = i
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    r = c.post(url + "/api/v1/segment", files={"file": ("s.png", payloads[k % len(payloads)])})
                    with lock:
                        latencies.append(time.perf_counter() - t)
                        errors[0] += r.status_code != 200
                    k += args.clients

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            memory.append(rss_mb(proc.pid))
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lat = np.array(latencies) * 1000
    result = {
        "clients": args.clients, "seconds": wall, "requests": len(lat), "errors": errors[0],
        "requests_per_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
        "server_rss_mb_start": memory[0], "server_rss_mb_max": max(memory), "server_rss_mb_end": memory[-1],
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    out = Path(__file__).parent / "results" / f"load-{platform.node() or 'host'}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
