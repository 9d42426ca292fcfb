#!/usr/bin/env python3
"""Server overhead (issue: HTTP server): dsocr-server with the tiny demo model on loopback.

    .venv/bin/python bench/server_bench.py [--requests 256] [--max-tokens 16]

For 1, 64 and 256 concurrent streaming clients (each a thread with its own keep-alive connection,
sending `--requests` requests in total per level: a short text prompt, `max_tokens` tokens,
SSE read to [DONE]) it reports requests/s and latency percentiles (request sent -> [DONE]). Then
it opens 256 long streams at once and reads the server's resident memory while all are open
(VmRSS), next to its idle RSS. Writes bench/results/server.json.

The tiny model's compute is small but not zero: at high concurrency the engine batches every
stream into one step, so requests/s measures the HTTP layer, SSE framing and the engine loop
together; compare levels, not absolute numbers across machines.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import ServerProcess  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stream_once(conn: http.client.HTTPConnection, body: bytes, on_first_event=None):
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    first = True
    while True:
        line = r.readline()
        if not line:
            raise RuntimeError("stream ended without [DONE]")
        if first and line.startswith(b"data: ") and on_first_event is not None:
            first = False
            on_first_event()
        if line.strip() == b"data: [DONE]":
            r.read()  # the chunked terminator
            break
    return time.perf_counter() - t0


def level(port: int, clients: int, requests: int, max_tokens: int) -> dict:
    body = json.dumps({"model": "demo", "max_tokens": max_tokens, "stream": True,
                       "messages": [{"role": "user", "content": "Free OCR."}]}).encode()
    per_client = max(1, requests // clients)
    latencies: list[float] = []
    lock = threading.Lock()

    def client(_):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        mine = [stream_once(conn, body) for _ in range(per_client)]
        conn.close()
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000  # noqa: E731
    return {"clients": clients, "requests": len(lat), "wall_s": round(wall, 3),
            "requests_per_s": round(len(lat) / wall, 2),
            "latency_ms": {"p50": round(pct(50), 1), "p90": round(pct(90), 1),
                           "p99": round(pct(99), 1), "mean": round(statistics.mean(lat) * 1000, 1)}}


def memory_at_open_streams(server, streams: int) -> dict:
    body = json.dumps({"model": "demo", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "Free OCR."}]}).encode()
    hold = threading.Event()
    opened = threading.Semaphore(0)

    def first_event_then_hold():
        opened.release()
        hold.wait()  # the stream stays open (unread) until every client has one

    def client(_):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        stream_once(conn, body, first_event_then_hold)
        conn.close()

    idle = rss_kib(server.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        futures = [pool.submit(client, i) for i in range(streams)]
        for _ in range(streams):
            opened.acquire(timeout=300)
        time.sleep(0.5)
        at_open = rss_kib(server.proc.pid)
        hold.set()
        for f in futures:
            f.result()
    return {"open_streams": streams, "idle_rss_mib": round(idle / 1024, 1),
            "rss_mib_with_open_streams": round(at_open / 1024, 1),
            "per_stream_kib": round((at_open - idle) / streams, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--levels", default="1,64,256")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "server.json"))
    args = ap.parse_args()
    cache = pathlib.Path(tempfile.mkdtemp(prefix="dsocr-bench-"))
    server = ServerProcess("--model", "demo", "--log-level", "warn", "--max-num-seqs", "256",
                           env={"DSOCR_CACHE_DIR": os.environ.get("DSOCR_CACHE_DIR", str(cache))})
    try:
        server.wait_healthy()
        level(server.port, 4, 8, args.max_tokens)  # warm-up
        results = []
        for clients in (int(c) for c in args.levels.split(",")):
            r = level(server.port, clients, max(args.requests, clients), args.max_tokens)
            print(json.dumps(r), flush=True)
            results.append(r)
        memory = memory_at_open_streams(server, 256)
        print(json.dumps(memory), flush=True)
    finally:
        server.stop()
    out = {"model": "demo (tiny random weights)", "max_tokens": args.max_tokens,
           "cpu_count": os.cpu_count(), "levels": results, "memory": memory}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
