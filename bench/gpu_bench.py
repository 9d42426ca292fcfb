#!/usr/bin/env python3
"""Pages/s on one GPU (issue #18): full-size random weights, page images (A4 and Letter at 144 dpi,
every request its own page: lines of text numbered by request, so the engine's image cache never
serves one from another), a warm-up page first (not timed), `dsocr bench` at each concurrency,
one JSON file per concurrency:
bench/results/gpu-c{N}.json with the GPU's name, the commit, pages/s, output tokens/s, TTFT and ITL
percentiles, the decode step time and the bytes a decode step must move over that time as a
fraction of the GPU's memory bandwidth.

    python3 bench/gpu_bench.py --dsocr BUNDLE/bin/dsocr --model /tmp/full-bf16 \
        [--concurrency 1,32,128] [--max-tokens 1000] [--out-dir bench/results] [--timeout 240]

Run by scripts/gpu-check.sh on the GPU machine (its python3 has numpy and Pillow). Output lengths
are the model's own: EOS ends a request (no --ignore-eos); random weights rarely emit it, so most
requests run to --max-tokens. The bytes per step are a floor counted from the checkpoint: every
non-expert matrix once, the routed experts a batch of B is expected to touch (64 experts, 6 per
token, drawn uniformly: 64 * (1 - (58/64)^B) per layer), and every sequence's K/V at its mean
context (prompt + half the output).
"""
import argparse
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A4 and US Letter at 144 dpi.
PAGES = {"a4": (1190, 1684), "letter": (1224, 1584)}
# Datasheet memory bandwidth (bytes/s) by GPU name; unknown GPUs report no fraction.
BANDWIDTH = {"H200": 4.8e12, "H100 80GB HBM3": 3.35e12, "H100": 3.35e12, "A100": 2.0e12}


def text_page(width, height, number, seed=0):
    """A white page of dark text lines, distinct per `number` (cheap to make and to PNG-encode)."""
    import random
    from PIL import Image, ImageDraw
    rng = random.Random(seed * 100003 + number)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    words = ["invoice", "total", "section", "table", "figure", "revenue", "2026", "page", "OCR",
             "document", "summary", "chapter", "model", "results", "appendix", "note"]
    draw.text((60, 40), f"Page {number}", fill=(0, 0, 0))
    for y in range(90, height - 60, 24):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        draw.text((60, y), line, fill=(20, 20, 20))
    return image


def gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def bandwidth_of(name):
    for key, value in BANDWIDTH.items():
        if key in name:
            return value
    return None


def checkpoint_bytes(model):
    """Bytes of the language model's tensors by role, from the safetensors headers."""
    roles = {"experts": 0, "embed": 0, "other_lm": 0, "vision": 0}
    for path in sorted(pathlib.Path(model).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            size = info["data_offsets"][1] - info["data_offsets"][0]
            if any(name.startswith(p) for p in ("model.sam_model.", "model.qwen2_model.",
                                                 "model.projector.", "model.view_seperator")):
                roles["vision"] += size
            elif ".mlp.experts." in name:
                roles["experts"] += size
            elif "embed_tokens" in name:
                roles["embed"] += size
            else:
                roles["other_lm"] += size
    return roles


def step_bytes(roles, config, batch, context):
    lc = config.get("language_config", config)
    experts, per_tok = lc["n_routed_experts"], lc["num_experts_per_tok"]
    touched = experts * (1 - (1 - per_tok / experts) ** batch)
    kv = batch * context * lc["num_hidden_layers"] * 2 * lc["num_key_value_heads"] * \
        (lc["hidden_size"] // lc["num_attention_heads"]) * 2
    return roles["other_lm"] + roles["experts"] * touched / experts + kv


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsocr", default=str(ROOT / "build" / "bin" / "dsocr"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", default="1,32,128")
    parser.add_argument("--requests-per-slot", type=int, default=1,
                        help="requests = max(4, concurrency * this)")
    parser.add_argument("--max-tokens", type=int, default=1000)
    parser.add_argument("--timeout", type=int, default=240, help="seconds per concurrency")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--commit", default=os.environ.get("DSOCR_COMMIT", "unknown"))
    parser.add_argument("--extra", default="", help="more `dsocr bench` flags, space separated")
    parser.add_argument("--label", default="",
                        help="results go to gpu-LABEL-c{N}.json (e.g. a variant's name)")
    args = parser.parse_args()

    name = gpu_name()
    bandwidth = bandwidth_of(name)
    config = json.loads((pathlib.Path(args.model) / "config.json").read_text())
    roles = checkpoint_bytes(args.model)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = list(PAGES.values())
        warmup = pathlib.Path(tmp) / "warmup.png"
        text_page(*sizes[0], number=-1).save(warmup)
        made = 0
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            requests = max(4, concurrency * args.requests_per_slot)
            while made < requests:  # page i: A4 for even i, Letter for odd
                text_page(*sizes[made % len(sizes)], number=made).save(
                    pathlib.Path(tmp) / f"page-{made}.png")
                made += 1
            images = [x for i in range(requests)
                      for x in ("--image", str(pathlib.Path(tmp) / f"page-{i}.png"))]
            command = [args.dsocr, "bench", "--model", args.model, *images,
                       "--warmup-image", str(warmup), "--requests",
                       str(requests), "--concurrency", str(concurrency), "--max-tokens",
                       str(args.max_tokens), "--ignore-eos=false", "--json", *args.extra.split()]
            started = time.time()
            try:
                proc = subprocess.run(command, capture_output=True, text=True,
                                      timeout=args.timeout)
            except subprocess.TimeoutExpired as e:
                stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
                print(f"c={concurrency}: timed out after {args.timeout} s\n{stderr[-2000:]}",
                      flush=True)
                summary.append({"concurrency": concurrency, "error": "timeout"})
                continue
            if proc.returncode != 0:
                print(f"c={concurrency}: failed\n{proc.stderr[-3000:]}", flush=True)
                summary.append({"concurrency": concurrency, "error": proc.stderr[-500:]})
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            outputs = result.get("output_tokens", 0)
            mean_output = outputs / requests if outputs else args.max_tokens
            context = result["prompt_tokens"] / requests + mean_output / 2
            step_ms = result["itl_ms"]["p50"]
            moved = step_bytes(roles, config, concurrency, context)
            kv_line = re.search(r"KV cache: (.*)", proc.stderr)
            record = {
                "what": "full-size random weights (bf16), A4 + Letter pages at 144 dpi, "
                        f"{args.max_tokens} output tokens at most (EOS ends a request)",
                "gpu": name,
                "commit": args.commit,
                "date": time.strftime("%Y-%m-%d"),
                "command": " ".join(command[1:]),
                "concurrency": concurrency,
                "requests": requests,
                "pages_per_s": round(result["pages_per_s"], 3),
                "output_tokens_per_s": round(result["output_tokens_per_s"], 1),
                "ttft_ms": result["ttft_ms"],
                "itl_ms": result["itl_ms"],
                "decode_step_ms_p50": round(step_ms, 3),
                "bytes_per_step_floor": int(moved),
                "bandwidth_fraction": round(moved / (step_ms / 1000) / bandwidth, 3)
                if bandwidth and step_ms > 0 else None,
                "bandwidth_assumed_bytes_per_s": bandwidth,
                "kv_cache": kv_line.group(1) if kv_line else None,
                "wall_s_including_start": round(time.time() - started, 1),
                "bench": result,
            }
            file_name = (f"gpu-{args.label}-c{concurrency}.json" if args.label
                         else f"gpu-c{concurrency}.json")
            record["label"] = args.label or None
            (out_dir / file_name).write_text(json.dumps(record, indent=1) + "\n")
            summary.append({"label": args.label} | {k: record[k] for k in ("concurrency", "pages_per_s",
                                                   "output_tokens_per_s", "decode_step_ms_p50",
                                                   "bandwidth_fraction")} |
                           {"ttft_p50_ms": round(result["ttft_ms"]["p50"], 1)})
            print(json.dumps(summary[-1]), flush=True)
    print("GPU:", name)
    for row in summary:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
