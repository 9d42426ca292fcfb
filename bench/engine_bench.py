#!/usr/bin/env python3
"""Engine throughput on CPU, `small` preset (issue: engine): the same N page requests run one
by one (`--concurrency 1`) and with C in flight, through the engine's public API
(`dsocr bench`), back to back in one run. Target: throughput at 16 >= 6x one by one.

    .venv/bin/python bench/engine_bench.py [--requests 16] [--concurrency 16] [--max-tokens 512]

Requests cycle over two generated pages (A4 and Letter at 144 dpi: 6 tiles + global view,
~1,130 prompt tokens each), so each mode encodes each page once (the engine's image cache)
and prefills every request in full (`--no-prefix-caching`: the ratio measures batching, not
prefix reuse). Output is capped at --max-tokens (a real page produces ~1,000 tokens; random
weights rarely stop earlier). Writes bench/results/engine.json.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
BIN = ROOT / "build" / "bin"


def run_bench(model, pages, requests, concurrency, max_tokens, kv_blocks):
    cmd = [str(BIN / "dsocr"), "bench", "--model", str(model), "--requests", str(requests),
           "--concurrency", str(concurrency), "--max-tokens", str(max_tokens),
           "--num-kv-blocks", str(kv_blocks), "--no-prefix-caching", "--json"]
    for page in pages:
        cmd += ["--image", str(page)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--model", help="a `small` model dir (made when absent)")
    args = parser.parse_args()
    import image_corpus
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        pages = [tmp / "a4.png", tmp / "letter.png"]
        image_corpus.page(1190, 1684).save(pages[0])
        image_corpus.page(1275, 1650).save(pages[1])
        model = pathlib.Path(args.model) if args.model else tmp / "small"
        if not args.model:
            subprocess.run([str(BIN / "dsocr"), "make-model", "--preset", "small", "--dtype", "f32",
                            "--out", str(model)], check=True, capture_output=True)
        # Room for every request's prompt and output at once, in both modes.
        kv_blocks = args.concurrency * ((1131 + 2 + args.max_tokens) // 16 + 2)
        batched = run_bench(model, pages, args.requests, args.concurrency, args.max_tokens,
                            kv_blocks)
        serial = run_bench(model, pages, args.requests, 1, args.max_tokens, kv_blocks)
    keys = ("wall_s", "pages_per_s", "output_tokens_per_s", "ttft_ms", "itl_ms")
    result = {
        "command": "dsocr bench --model SMALL --image a4.png --image letter.png --requests "
                   f"{args.requests} --concurrency C --max-tokens {args.max_tokens} "
                   "--no-prefix-caching --json",
        "preset": "small (f32, CPU)",
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "concurrency_1": {k: serial[k] for k in keys},
        f"concurrency_{args.concurrency}": {k: batched[k] for k in keys},
        "throughput_ratio": round(batched["output_tokens_per_s"] / serial["output_tokens_per_s"], 2),
    }
    out = ROOT / "bench" / "results" / "engine.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
