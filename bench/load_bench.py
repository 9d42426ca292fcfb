#!/usr/bin/env python3
"""Checkpoint load throughput from the page cache, side by side in one run, dsocr's loader vs
`safetensors.torch.load_file` (PyPI) on the same checkpoint, measured two ways: zero-copy (all
tensors as views of the mapped file) and materialised (every tensor copied once).

    .venv/bin/python bench/load_bench.py [--model DIR] [--preset full] [--repeat 3]

Without --model it writes a random checkpoint with `dsocr make-model --preset full` (6.8 GB bf16)
to a temporary directory first. Writes bench/results/load.json.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build-dir", default=os.environ.get("DSOCR_BUILD_DIR", str(ROOT / "build")))
    args = ap.parse_args()
    bin_dir = pathlib.Path(args.build_dir) / "bin"
    tmp = None
    model = args.model
    if model is None:
        tmp = tempfile.TemporaryDirectory(prefix="dsocr-load-bench-")
        model = tmp.name
        subprocess.run([str(bin_dir / "dsocr"), "make-model", "--preset", args.preset,
                        "--out", model, "--tokenizer-dir", ""], check=True)
    shard = next(pathlib.Path(model).glob("*.safetensors"))
    size = shard.stat().st_size
    with open(shard, "rb") as f:  # into the page cache
        while f.read(1 << 26):
            pass
    ours = json.loads(subprocess.run([str(bin_dir / "load_bench"), "--model", model,
                                      "--repeat", str(args.repeat)],
                                     capture_output=True, text=True, check=True).stdout)
    import torch
    from safetensors.torch import load_file
    best_views = best_copy = 1e30
    for _ in range(args.repeat):
        start = time.perf_counter()
        tensors = load_file(str(shard))
        viewed = time.perf_counter()
        owned = [t.clone() for t in tensors.values()]
        copied = time.perf_counter()
        best_views = min(best_views, viewed - start)
        best_copy = min(best_copy, copied - start)
        del tensors, owned
    result = {
        "benchmark": "checkpoint load from page cache",
        "file_bytes": size, "tensors": ours["tensors"],
        "dsocr": {"open_s": ours["open_s"], "views_s": ours["views_s"], "copy_s": ours["copy_s"],
                  "copy_gb_per_s": size / ours["copy_s"] / 1e9},
        "safetensors_load_file": {"views_s": best_views, "copy_s": best_copy,
                                  "copy_gb_per_s": size / best_copy / 1e9},
        "ratio_views": best_views / ours["views_s"],
        "ratio_copy": best_copy / ours["copy_s"],
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/load_bench.py " + " ".join(sys.argv[1:]),
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
