#!/usr/bin/env python3
"""Tokenizer encode throughput, single thread, side by side in one run: dsocr (C++) vs the
`tokenizers` library (Rust, called per document from Python), on a mixed document corpus
(prose, code, markdown and HTML tables, LaTeX, numbers, CJK and other scripts, emoji).

    .venv/bin/python bench/tokenizer_bench.py [--mb 8] [--repeat 3] [--json]

Writes bench/results/tokenizer.json. Both sides get the same documents and report their best pass.
"""
import argparse
import json
import os
import pathlib
import platform
import random
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"          # before tokenizers loads: one thread
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from tokenizer_corpus import fragment  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

TOKENIZER = ROOT.parent / "shared" / "model-files" / "deepseek-ocr2" / "tokenizer.json"


def documents(total_mb: float, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    docs, size = [], 0
    while size < total_mb * 1e6:
        parts, doc_size = [], 0
        while doc_size < 8000:  # ~8 KB documents, like an OCR'd page
            frag = fragment(rng)
            parts.append(frag)
            doc_size += len(frag.encode())
        doc = rng.choice([" ", "\n", "\n\n"]).join(parts)
        docs.append(doc)
        size += len(doc.encode())
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build-dir", default=os.environ.get("DSOCR_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--json", action="store_true", help="print only the result JSON")
    args = ap.parse_args()

    docs = documents(args.mb)
    total = sum(len(d.encode()) for d in docs)
    ref = Tokenizer.from_file(str(TOKENIZER))
    best, ref_tokens = 1e30, 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        ref_tokens = sum(len(ref.encode(d, add_special_tokens=False).ids) for d in docs)
        best = min(best, time.perf_counter() - start)
    reference = {"seconds": best, "mb_per_s": total / best / 1e6, "tokens": ref_tokens}

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
        docs_path = f.name
    try:
        out = subprocess.run([str(pathlib.Path(args.build_dir) / "bin" / "tokenizer_bench"),
                              "--tokenizer", str(TOKENIZER), "--docs", docs_path,
                              "--repeat", str(args.repeat)],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(docs_path)
    ours = json.loads(out)
    assert ours["tokens"] == ref_tokens, (ours["tokens"], ref_tokens)

    result = {
        "benchmark": "tokenizer encode, one thread",
        "corpus": {"documents": len(docs), "bytes": total},
        "dsocr": {"seconds": ours["seconds"], "mb_per_s": ours["mb_per_s"]},
        "tokenizers": {"seconds": reference["seconds"], "mb_per_s": reference["mb_per_s"],
                       "version": __import__("tokenizers").__version__},
        "ratio_dsocr_over_tokenizers": ours["mb_per_s"] / reference["mb_per_s"],
        "tokens": ref_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python bench/tokenizer_bench.py " + " ".join(sys.argv[1:]),
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "tokenizer.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"corpus: {len(docs)} documents, {total / 1e6:.1f} MB, {ref_tokens} tokens")
        print(f"dsocr      {ours['mb_per_s']:7.2f} MB/s")
        print(f"tokenizers {reference['mb_per_s']:7.2f} MB/s")
        print(f"ratio      {result['ratio_dsocr_over_tokenizers']:7.2f}x")


if __name__ == "__main__":
    main()
