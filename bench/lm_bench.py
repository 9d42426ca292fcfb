#!/usr/bin/env python3
"""Language-model speed on CPU, `small` preset, side by side in one run (issue: language model):
prefill tokens/s and decode tokens/s of dsocr at batch 1, 8 and 32 (text prompts through the
engine, `dsocr bench`) and of transformers' DeepseekOcr2 `generate()` at batch 1, same threads.

    .venv/bin/python bench/lm_bench.py [--prompt-tokens 512] [--max-tokens 32] [--threads 2]

Writes bench/results/lm.json. Decode tokens/s = batch / median inter-token latency; prefill
tokens/s = prompt tokens / wall time of a max_tokens=1 run. For transformers: prefill = a
1-token generate(), decode = the extra time of an N-token generate() per extra token.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
BIN = ROOT / "build" / "bin"
WORDS = "the quick brown fox jumps over a lazy dog while reading tables of numbers".split()


def ours(model, prompt, batch, max_tokens, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    def run(tokens):
        proc = subprocess.run([str(BIN / "dsocr"), "bench", "--model", str(model), "--prompt", prompt,
                               "--requests", str(batch), "--concurrency", str(batch),
                               "--max-tokens", str(tokens), "--num-kv-blocks", "4096", "--json",
                               "--no-prefix-caching"],
                              check=True, capture_output=True, text=True, env=env)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    prefill = run(1)
    decode = run(max_tokens)
    return {"prefill_tokens_per_s": prefill["prompt_tokens"] / prefill["wall_s"],
            "decode_tokens_per_s": batch / (decode["itl_ms"]["p50"] / 1000.0)}


def transformers_batch1(model, prompt, max_tokens, threads):
    import torch
    from hf_reference import load_reference
    from tokenizers import Tokenizer
    torch.set_num_threads(threads)
    ref, _ = load_reference(pathlib.Path(model))
    tok = Tokenizer.from_file(str(pathlib.Path(model) / "tokenizer.json"))
    ids = torch.tensor([[0] + tok.encode(prompt, add_special_tokens=False).ids])
    def generate_s(new_tokens):  # best of two
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            ref.generate(input_ids=ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False)
            best = min(best, time.perf_counter() - t0)
        return best
    with torch.no_grad():
        prefill_s = generate_s(1)
        total_s = generate_s(max_tokens)
    generated = max_tokens
    return {"prefill_tokens_per_s": ids.shape[1] / prefill_s,
            "decode_tokens_per_s": (generated - 1) / (total_s - prefill_s),
            "prompt_tokens": ids.shape[1]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", help="a `small` model dir (made when absent)")
    args = parser.parse_args()
    prompt = " ".join(WORDS[i % len(WORDS)] for i in range(args.prompt_tokens))
    with tempfile.TemporaryDirectory() as tmp:
        model = pathlib.Path(args.model) if args.model else pathlib.Path(tmp) / "small"
        if not args.model:
            subprocess.run([str(BIN / "dsocr"), "make-model", "--preset", "small", "--dtype", "f32",
                            "--out", str(model)], check=True, capture_output=True)
        reference = transformers_batch1(model, prompt, args.max_tokens, args.threads)
        result = {"preset": "small", "threads": args.threads,
                  "prompt_tokens": reference["prompt_tokens"], "transformers_batch1": reference}
        for batch in (1, 8, 32):
            r = ours(model, prompt, batch, args.max_tokens, args.threads)
            r["decode_vs_transformers_batch1"] = r["decode_tokens_per_s"] / reference["decode_tokens_per_s"]
            r["prefill_vs_transformers"] = r["prefill_tokens_per_s"] / reference["prefill_tokens_per_s"]
            result[f"dsocr_batch{batch}"] = r
    out = ROOT / "bench" / "results" / "lm.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
