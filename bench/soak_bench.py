#!/usr/bin/env python3
"""Soak (issue #16): many concurrent keep-alive streaming clients against dsocr-server for a while.

    .venv/bin/python bench/soak_bench.py [--clients 1000] [--duration 600] [--url URL --pid PID]

Starts `dsocr-server --model demo` (or uses the running server at --url; --pid lets it read that
server's memory) and runs --clients asyncio clients for --duration seconds. Each client keeps one
HTTP/1.1 connection (reopened when the server closes it) and sends streaming chat requests back to
back: one of a few small page images, a varied prompt, max_tokens varied around --max-tokens.
Every stream is checked: status 200, text/event-stream, each event JSON (or a comment), ending
with `data: [DONE]` and the chunked terminator.

Reports completed streams, errors by kind (http_<status>, timeout, reset, closed mid-response,
malformed_http, malformed_sse, stream_error, connect), latency percentiles, the server's RSS
(idle before, after warm-up, at the end, peak; sampled from /proc/PID/status) and its KV usage
and request gauges after the run (from /metrics), and writes bench/results/soak.json.

Everything is bounded: each request has --request-timeout, the run stops at --duration plus that
timeout whatever the server does, and a server this script started gets SIGTERM (then SIGKILL).
The raw HTTP is hand-written (no HTTP library) so that framing faults are seen, not repaired.
"""
import argparse
import asyncio
import io
import json
import os
import pathlib
import random
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import ServerProcess  # noqa: E402
from http_attack import data_uri, page_png, supported_flags  # noqa: E402

FIRST_TEXT = re.compile(rb'"content":"[^"]')  # a delta with text: the first token arrived
PROMPTS = ["Free OCR.", "<|grounding|>Convert the document to markdown.", "Describe this image.",
           "Parse the figure.", "<|grounding|>OCR this image."]


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.completed = 0
        self.started = 0
        self.connections = 0
        self.errors: dict[str, int] = {}
        self.error_samples: dict[str, str] = {}
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.chunks = 0

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.error_samples.setdefault(kind, detail[:300])


class Malformed(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3})", lines[0])
    if not m:
        raise Malformed("malformed_http", repr(lines[0][:200]))
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(b":")
        if not sep:
            raise Malformed("malformed_http", repr(line[:200]))
        headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    return int(m.group(1)), headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], on_data=None) -> bytes:
    """The whole body (chunked or Content-Length); on_data sees each piece as it arrives."""
    out = io.BytesIO()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise Malformed("malformed_http", f"chunk size {size_line[:50]!r}") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return out.getvalue()
            data = await reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                raise Malformed("malformed_http", "chunk without CRLF")
            out.write(data[:-2])
            if on_data:
                on_data(data[:-2])
    if "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
        if on_data:
            on_data(data)
        return data
    raise Malformed("malformed_http", "a response without Content-Length or chunked framing")


def check_sse(body: bytes) -> int:
    """Validates a complete event stream; the number of content chunks."""
    events = [e for e in body.split(b"\n\n") if e]
    if not events or events[-1] != b"data: [DONE]":
        raise Malformed("malformed_sse", f"does not end with [DONE]: {body[-200:]!r}")
    content = 0
    for event in events[:-1]:
        if event.startswith(b":"):
            continue  # keep-alive comment
        if not event.startswith(b"data: "):
            raise Malformed("malformed_sse", repr(event[:200]))
        try:
            j = json.loads(event[6:])
        except ValueError:
            raise Malformed("malformed_sse", f"not JSON: {event[:200]!r}") from None
        if "error" in j:
            raise Malformed("stream_error", json.dumps(j["error"])[:300])
        if j.get("object") != "chat.completion.chunk":
            raise Malformed("malformed_sse", repr(event[:200]))
        if j.get("choices") and j["choices"][0]["delta"].get("content"):
            content += 1
    return content


class Client:
    def __init__(self, index: int, args, host: str, port: int, images: list[str], stats: Stats,
                 end: float):
        self.index, self.args, self.host, self.port = index, args, host, port
        self.images, self.stats, self.end = images, stats, end
        self.rng = random.Random(args.seed * 100_003 + index)
        self.reader = self.writer = None

    def content(self) -> list:
        text = {"type": "text", "text": self.rng.choice(PROMPTS)}
        if self.rng.random() >= self.args.image_fraction:
            return [text]
        return [{"type": "image_url", "image_url": {"url": self.rng.choice(self.images)}}, text]

    def request(self) -> bytes:
        spread = self.args.max_tokens // 2
        body = json.dumps({
            "model": self.args.model_name, "stream": True,
            "max_tokens": max(1, self.args.max_tokens + self.rng.randint(-spread, spread)),
            "temperature": self.rng.choice([0, 0.7]), "seed": self.rng.randrange(1 << 30),
            "messages": [{"role": "user", "content": self.content()}]}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        if self.args.api_key:
            head += f"Authorization: Bearer {self.args.api_key}\r\n"
        return head.encode() + b"\r\n" + body

    async def close(self):
        if self.writer:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 1)
            except (OSError, asyncio.TimeoutError):
                pass
        self.reader = self.writer = None

    async def one_stream(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.stats.connections += 1
        t0 = time.perf_counter()
        first: list[float] = []
        self.writer.write(self.request())
        await self.writer.drain()
        status, headers = await read_head(self.reader)

        def on_data(data: bytes):
            if not first and FIRST_TEXT.search(data):
                first.append(time.perf_counter() - t0)

        body = await read_body(self.reader, headers, on_data if status == 200 else None)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        if status != 200:
            raise Malformed(f"http_{status}", body[:300].decode("utf-8", "replace"))
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise Malformed("malformed_http", f"content-type {headers.get('content-type')}")
        self.stats.chunks += check_sse(body)
        self.stats.latency.append(time.perf_counter() - t0)
        if first:
            self.stats.ttft.append(first[0])

    async def run(self, ramp_delay: float) -> None:
        await asyncio.sleep(ramp_delay)
        while time.monotonic() < self.end:
            self.stats.started += 1
            try:
                await asyncio.wait_for(self.one_stream(), self.args.request_timeout)
                self.stats.completed += 1
                continue
            except asyncio.TimeoutError:
                self.stats.error("timeout", f"client {self.index}")
            except Malformed as e:
                self.stats.error(e.kind, str(e))
                if not e.kind.startswith("http_") and e.kind != "stream_error":
                    await self.close()  # framing is lost: a fresh connection
                    continue
                if e.kind in ("http_429", "http_503"):
                    await asyncio.sleep(0.5)  # back off like a polite client
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                self.stats.error("reset", repr(e))
            except asyncio.IncompleteReadError as e:
                self.stats.error("closed", f"after {len(e.partial)} bytes")
            except asyncio.LimitOverrunError as e:
                self.stats.error("malformed_http", repr(e))
            except OSError as e:
                self.stats.error("connect" if self.writer is None else "reset", repr(e))
                await asyncio.sleep(0.5)
            await self.close()
        await self.close()


async def get(host: str, port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status, headers = await asyncio.wait_for(read_head(reader), timeout)
        return status, await asyncio.wait_for(read_body(reader, headers), timeout)
    finally:
        writer.close()


def metric(text: str, name: str) -> float | None:
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


async def server_gauges(host: str, port: int) -> dict:
    try:
        _, body = await get(host, port, "/metrics")
    except (OSError, asyncio.TimeoutError, Malformed, asyncio.IncompleteReadError) as e:
        return {"error": repr(e)}
    text = body.decode()
    names = ["dsocr_kv_cache_usage_ratio", "dsocr_requests_running", "dsocr_requests_waiting",
             "dsocr_requests_preparing", 'dsocr_requests_total{finish_reason="cancelled"}',
             'dsocr_requests_total{finish_reason="length"}',
             'dsocr_requests_total{finish_reason="stop"}',
             'dsocr_requests_total{finish_reason="error"}', "dsocr_generation_tokens_total",
             "dsocr_preemptions_total"]
    return {name: metric(text, name) for name in names}


async def soak(args, host: str, port: int, pid: int | None) -> dict:
    rng = random.Random(args.seed)
    images = [data_uri(page_png(size=(rng.randint(320, 640), rng.randint(400, 800)), seed=i,
                                lines=rng.randint(4, 12))) for i in range(args.images)]
    stats = Stats()
    rss = {"before_kib": rss_kib(pid), "peak_kib": rss_kib(pid)}
    t_start = time.monotonic()
    end = t_start + args.duration
    warmup_at = t_start + min(args.warmup, args.duration / 2)
    hard_stop = end + args.request_timeout + 5

    async def sample():
        while True:
            now = rss_kib(pid)
            if now is not None:
                rss["peak_kib"] = max(rss["peak_kib"] or 0, now)
            if "after_warmup_kib" not in rss and time.monotonic() >= warmup_at:
                rss["after_warmup_kib"] = now
            if args.progress and int(time.monotonic() - t_start) % args.progress == 0:
                print(f"[{time.monotonic() - t_start:6.0f} s] completed {stats.completed}, "
                      f"errors {stats.errors}, rss {now} KiB", file=sys.stderr, flush=True)
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    ramp = min(args.ramp, args.duration / 4)
    clients = [Client(i, args, host, port, images, stats, end) for i in range(args.clients)]
    tasks = [asyncio.create_task(c.run(ramp * i / max(1, args.clients)))
             for i, c in enumerate(clients)]
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, hard_stop - time.monotonic()))
    for t in pending:
        t.cancel()
    if pending:
        stats.error("cut_at_hard_stop", f"{len(pending)} clients still busy")
        await asyncio.wait(pending, timeout=10)
    wall = time.monotonic() - t_start
    await asyncio.sleep(args.settle)  # let the server notice closed connections
    sampler.cancel()
    rss["end_kib"] = rss_kib(pid)
    gauges = await server_gauges(host, port)
    lat = sorted(stats.latency)
    ttft = sorted(stats.ttft)

    def pct(values, p):
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000, 1) \
            if values else None

    mib = {k.replace("_kib", "_mib"): (round(v / 1024, 1) if v is not None else None)
           for k, v in rss.items()}
    return {
        "clients": args.clients, "duration_s": args.duration, "wall_s": round(wall, 1),
        "streams_started": stats.started, "streams_completed": stats.completed,
        "streams_per_s": round(stats.completed / wall, 2), "content_chunks": stats.chunks,
        "connections_opened": stats.connections,
        "errors": dict(sorted(stats.errors.items())), "error_samples": stats.error_samples,
        "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                       "max": pct(lat, 100),
                       "mean": round(statistics.mean(lat) * 1000, 1) if lat else None},
        "ttft_ms": {"p50": pct(ttft, 50), "p90": pct(ttft, 90), "p99": pct(ttft, 99)},
        "server_rss": mib, "server_after": gauges,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=600, help="seconds of load")
    ap.add_argument("--max-tokens", type=int, default=32, help="varied +-50%% per request")
    ap.add_argument("--images", type=int, default=8, help="distinct small page images")
    ap.add_argument("--image-fraction", type=float, default=1.0,
                    help="share of requests with an image (the rest are text only); on CPU each "
                         "image is preprocessed on --vision-threads, which can bound throughput")
    ap.add_argument("--request-timeout", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=30, help="seconds before 'after warm-up' RSS")
    ap.add_argument("--ramp", type=float, default=10, help="seconds over which clients start")
    ap.add_argument("--settle", type=float, default=3, help="seconds before the final readings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", help="a running server (default: start --model demo here)")
    ap.add_argument("--pid", type=int, help="the running server's pid, for its RSS")
    ap.add_argument("--api-key", default=os.environ.get("DSOCR_API_KEY", ""))
    ap.add_argument("--model-name", default="demo")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra dsocr-server flag (repeatable): --server-arg=--vision-threads=2")
    ap.add_argument("--progress", type=int, default=0, help="print progress every N s (0: off)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 2 * args.clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the server inherits it too

    server = None
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        host, port, pid = u.hostname, u.port or 80, args.pid
    else:
        cache = os.environ.get("DSOCR_CACHE_DIR", tempfile.mkdtemp(prefix="dsocr-soak-"))
        # Queue limits above the client count: the soak measures the HTTP layer, not 429s.
        flags = ["--max-queued-requests", str(args.clients + 64), "--max-num-seqs", "256",
                 "--log-level", "warn"]
        flags += supported_flags(("--max-connections", str(args.clients + 64)))
        flags += args.server_arg
        if args.api_key:
            flags += ["--api-key", args.api_key]
        server = ServerProcess("--model", "demo", *flags, env={"DSOCR_CACHE_DIR": cache})
        server.wait_healthy(timeout=120)
        host, port, pid = "127.0.0.1", server.port, server.proc.pid
        args.server_flags = flags
    try:
        result = asyncio.run(soak(args, host, port, pid))
    finally:
        exit_code = None
        if server is not None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                exit_code = server.proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 - a server that will not stop is killed
                server.proc.kill()
                server.proc.wait()
    result["server_exit_code"] = exit_code
    result["server"] = args.url or "dsocr-server --model demo " + " ".join(args.server_flags)
    result["command"] = " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]])
    result["cpu_count"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
