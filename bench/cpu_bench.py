#!/usr/bin/env python3
"""The real model's shapes on the CPU (issue #21): full-size random weights (`dsocr make-model
--preset full --dtype bf16`), one A4 page, for each way of keeping the language model's weights
(`--weights float32|bfloat16|int8`) side by side in one run: peak RSS, load time, TTFT, decode
tokens/s (1 / median inter-token latency) and pages/min at the given concurrencies.

    .venv/bin/python bench/cpu_bench.py [--model /tmp/full-bf16] [--weights int8,bfloat16,float32]
                                        [--concurrency 1] [--requests 2] [--max-tokens 48]

The model is made first if the directory does not exist (6.8 GB, ~45 s). Every run is
`/usr/bin/time -v dsocr bench ...` (the command is recorded); runs alternate formats, so a slow
phase of the machine hits them alike. Writes bench/results/cpu.json.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
DSOCR = ROOT / "build" / "bin" / "dsocr"


def run_one(model, page, weights, concurrency, requests, max_tokens):
    command = ["/usr/bin/time", "-v", str(DSOCR), "bench", "--model", str(model), "--image",
               str(page), "--requests", str(requests), "--concurrency", str(concurrency),
               "--max-tokens", str(max_tokens), "--weights", weights, "--json"]
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    loaded = re.search(r"loaded on .* in ([0-9.]+) s", proc.stderr)
    plan = re.search(r"(CPU memory plan: .*)", proc.stderr)
    return {
        "weights": weights,
        "concurrency": concurrency,
        "command": " ".join(command[2:]),
        "peak_rss_gb": round(peak_kib * 1024 / 1e9, 2),
        "load_s": float(loaded.group(1)) if loaded else None,
        "wall_s_including_start": round(time.time() - started, 1),
        "ttft_s_p50": round(result["ttft_ms"]["p50"] / 1000, 2),
        "decode_tokens_per_s": round(1000 / result["itl_ms"]["p50"], 2),
        "itl_ms_p50": round(result["itl_ms"]["p50"], 1),
        "pages_per_min": round(result["pages_per_s"] * 60, 3),
        "start_up_plan": plan.group(1) if plan else None,
        "bench": result,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/full-bf16")
    parser.add_argument("--weights", default="int8,bfloat16,float32")
    parser.add_argument("--concurrency", default="1")
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu.json"))
    args = parser.parse_args()

    model = pathlib.Path(args.model)
    if not model.exists():
        subprocess.run([str(DSOCR), "make-model", "--preset", "full", "--dtype", "bf16", "--out",
                        str(model)], check=True)
    import image_corpus
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        page = pathlib.Path(tmp) / "a4.png"
        image_corpus.page(1190, 1684).save(page)
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for weights in args.weights.split(","):
                requests = max(args.requests, concurrency)
                run = run_one(model, page, weights, concurrency, requests, args.max_tokens)
                print(json.dumps({k: v for k, v in run.items() if k != "bench"}), flush=True)
                runs.append(run)
    out = {
        "what": "full-size random weights (bf16 checkpoint), one A4 page (1190x1684), "
                "language-model weights kept as float32, bfloat16 or int8; compute float32",
        "date": time.strftime("%Y-%m-%d"),
        "machine": subprocess.run(["sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo; "
                                   "grep -o -m1 'avx512[a-z_]*' /proc/cpuinfo | head -1"],
                                  capture_output=True, text=True).stdout.split("\n"),
        "runs": runs,
    }
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
