#!/usr/bin/env python3
"""Two builds of dsocr side by side, round by round, on the same `small` model: did a change keep
the engine's speed? (Issue #17 asked that the engine split stay within noise.)

    .venv/bin/python bench/ab_bench.py --base-bin OLD/build/bin --rounds 3 [--label-base main@403da75]

Each round runs, for the base build then this build (the order alternates per round, so that a
machine getting slower or faster over the run does not favour one side):
  * lm:     a 512-token text prompt, batch 1 and batch 8, 32 new tokens (decode tok/s, prefill s)
  * engine: the A4 and Letter pages of engine_bench.py, 4 requests one by one and 4 at once,
            64 new tokens (pages/s, TTFT)
through `dsocr bench --json`. Prints per-metric medians and the ratio this/base, and writes
bench/results/ab.json. Ratios near 1.0 within the rounds' spread mean "within noise".
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
THIS_BIN = ROOT / "build" / "bin"
WORDS = "the quick brown fox jumps over a lazy dog while reading tables of numbers".split()


def bench(bin_dir, model, extra):
    cmd = [str(pathlib.Path(bin_dir) / "dsocr"), "bench", "--model", str(model), "--json",
           "--no-prefix-caching", "--num-kv-blocks", "2048"] + extra
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_side(bin_dir, model, pages, prompt):
    out = {}
    for batch in (1, 8):
        r = bench(bin_dir, model, ["--prompt", prompt, "--requests", str(batch), "--concurrency",
                                   str(batch), "--max-tokens", "32"])
        out[f"lm_decode_tok_s_b{batch}"] = batch / (r["itl_ms"]["p50"] / 1000.0)
    r = bench(bin_dir, model, ["--prompt", prompt, "--requests", "1", "--max-tokens", "1"])
    out["lm_prefill_s"] = r["wall_s"]
    images = []
    for page in pages:
        images += ["--image", str(page)]
    for concurrency in (1, 4):
        r = bench(bin_dir, model, images + ["--requests", "4", "--concurrency", str(concurrency),
                                            "--max-tokens", "64"])
        out[f"engine_pages_s_c{concurrency}"] = r["pages_per_s"]
        out[f"engine_ttft_ms_p50_c{concurrency}"] = r["ttft_ms"]["p50"]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-bin", required=True, help="bin/ folder of the build to compare with")
    parser.add_argument("--label-base", default="base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a `small` model dir (made when absent)")
    args = parser.parse_args()
    import image_corpus
    prompt = " ".join(WORDS[i % len(WORDS)] for i in range(512))
    runs = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        pages = [tmp / "a4.png", tmp / "letter.png"]
        image_corpus.page(1190, 1684).save(pages[0])
        image_corpus.page(1275, 1650).save(pages[1])
        model = pathlib.Path(args.model) if args.model else tmp / "small"
        if not args.model:
            subprocess.run([str(THIS_BIN / "dsocr"), "make-model", "--preset", "small", "--dtype",
                            "f32", "--out", str(model)], check=True, capture_output=True)
        for round_index in range(args.rounds):
            order = ["base", "this"] if round_index % 2 == 0 else ["this", "base"]
            for side in order:
                bin_dir = args.base_bin if side == "base" else THIS_BIN
                runs[side].append(one_side(bin_dir, model, pages, prompt))
                print(f"round {round_index + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    metrics = {}
    for key in runs["this"][0]:
        base = [r[key] for r in runs["base"]]
        this = [r[key] for r in runs["this"]]
        metrics[key] = {"base_median": round(statistics.median(base), 3),
                        "this_median": round(statistics.median(this), 3),
                        "ratio_this_over_base": round(statistics.median(this) /
                                                      statistics.median(base), 3),
                        "base_runs": [round(v, 3) for v in base],
                        "this_runs": [round(v, 3) for v in this]}
    result = {"base": args.label_base, "rounds": args.rounds, "preset": "small (f32, CPU)",
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "metrics": metrics}
    out = ROOT / "bench" / "results" / "ab.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
