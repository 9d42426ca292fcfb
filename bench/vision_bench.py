#!/usr/bin/env python3
"""Vision benchmarks, side by side in one run (issue: vision pipeline).

1. Preprocessing of an A4 page at 144 dpi (1190x1684 -> 6 tiles + global), one core: dsocr
   (C++: tiling, Pillow-exact resizes, padding, normalisation to float32) vs the same steps in
   Python with Pillow + numpy (the official algorithm, tests/python/pillow_reference.py).
2. CPU encode of that page on the `small` preset: dsocr's VisionModel vs transformers'
   DeepseekOcr2 vision tower + projector, same threads, fp32, same pixel tensors.

    .venv/bin/python bench/vision_bench.py [--iters 10] [--threads 2] [--model DIR]

Writes bench/results/vision.json. Each side reports its best iteration.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
BIN = ROOT / "build" / "bin"


def python_preprocess_ms(path, iters):
    import numpy as np
    from PIL import Image
    import pillow_reference
    image = Image.open(path).convert("RGB")
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        _, global_view, tiles = pillow_reference.preprocess(image)
        views = [global_view] + tiles
        for v in views:  # ToTensor + Normalize(0.5, 0.5) in numpy float32
            x = np.asarray(v, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
            x = (x - np.float32(0.5)) / np.float32(0.5)
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best


def python_encode_ms(model_dir, path, iters, threads):
    import torch
    from safetensors.torch import load_file
    from hf_reference import load_reference
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        dump = pathlib.Path(tmp) / "d.safetensors"
        subprocess.run([str(BIN / "dsocr"), "encode", "--model", str(model_dir), "--out", str(dump),
                        str(path)], check=True, capture_output=True)
        pixels = load_file(str(dump))
    model, _ = load_reference(pathlib.Path(model_dir))
    tower, proj = model.model.vision_tower, model.model.multi_modal_projector
    g, t = pixels["pixel_values"], pixels["pixel_values_local"]
    best = float("inf")
    with torch.no_grad():
        proj(tower(g).last_hidden_state)
        for _ in range(iters):
            t0 = time.perf_counter()
            proj(tower(g).last_hidden_state)
            proj(tower(t).last_hidden_state)
            best = min(best, (time.perf_counter() - t0) * 1000)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", help="a `small` model dir (made when absent)")
    args = parser.parse_args()
    import image_corpus
    with tempfile.TemporaryDirectory() as tmp:
        page = pathlib.Path(tmp) / "a4.png"
        image_corpus.page(1190, 1684).save(page)
        ours = json.loads(subprocess.run([str(BIN / "vision_bench"), "preprocess", str(page),
                                          "--iters", str(args.iters)], check=True,
                                         capture_output=True, text=True).stdout)
        theirs = python_preprocess_ms(page, args.iters)
        model = pathlib.Path(args.model) if args.model else pathlib.Path(tmp) / "small"
        if not args.model:
            subprocess.run([str(BIN / "dsocr"), "make-model", "--preset", "small", "--dtype", "f32",
                            "--out", str(model), "--tokenizer-dir", ""], check=True, capture_output=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        enc = json.loads(subprocess.run([str(BIN / "vision_bench"), "encode", str(model), str(page),
                                         "--iters", str(max(2, args.iters // 3))], check=True,
                                        capture_output=True, text=True, env=env).stdout)
        enc_ref = python_encode_ms(model, page, max(2, args.iters // 3), args.threads)
    result = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "preprocess_a4_ms": {"dsocr": round(ours["ms_per_page"], 2),
                             "pillow_numpy": round(theirs, 2),
                             "speedup": round(theirs / ours["ms_per_page"], 2)},
        "encode_a4_small_ms": {"dsocr": round(enc["ms_per_page"], 1),
                               "transformers": round(enc_ref, 1),
                               "threads": args.threads,
                               "speedup": round(enc_ref / enc["ms_per_page"], 2)},
    }
    out = ROOT / "bench" / "results" / "vision.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
