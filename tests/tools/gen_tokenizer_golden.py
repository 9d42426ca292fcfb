#!/usr/bin/env python3
"""Writes tests/data/tokenizer_golden.json, the reference answers the Catch2 tokenizer tests
compare against, computed with the `tokenizers` library on the DeepSeek-OCR-2 tokenizer.json:

- cases: input bytes (hex; some invalid UTF-8), their ids, decode(ids) with and without special
  tokens. Invalid UTF-8 is defined as its lossy conversion (bytes.decode("utf-8", "replace")).
- prompts: spec §8.2 token sequences built independently here: [BOS] + per segment
  tok(segment) + [<image>] * N, the prompt stripped first.

    .venv/bin/python tests/tools/gen_tokenizer_golden.py > tests/data/tokenizer_golden.json
"""
import json
import pathlib
import random
import sys

from tokenizers import Tokenizer

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "python"))
from tokenizer_corpus import corpus  # noqa: E402

ROOT = pathlib.Path(__file__).parents[2]
TOKENIZER = ROOT.parent / "shared" / "model-files" / "deepseek-ocr2" / "tokenizer.json"
BOS, IMAGE = 0, 128815

INVALID_UTF8 = [b"\xff", b"abc\x80def", b"\xe2\x82", b"\xe2\x82\xac\xe2", b"\xf0\x9f\x98",
                b"\xf0\x80\x80\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80",
                b"<image>\xfe<image>", b"\xe4\xb8\xad\xe6\x96", b"ok\xc3", b"\x80\x80\x80",
                b"\xe0\x80\xaf", b"caf\xc3\xa9 \xe9t\xe9"]


def spec_prompt(tok: Tokenizer, text: str, counts: list[int]) -> list[int]:
    segments = text.strip().split("<image>")
    assert len(segments) == len(counts) + 1
    ids = [BOS]
    for k, segment in enumerate(segments):
        ids += tok.encode(segment, add_special_tokens=False).ids
        if k < len(counts):
            ids += [IMAGE] * counts[k]
    return ids


def main():
    tok = Tokenizer.from_file(str(TOKENIZER))
    rng = random.Random(3)
    texts = corpus(20000)
    sample = texts[:120] + rng.sample(texts[120:], 300)
    cases = []
    for raw in [t.encode() for t in sample] + INVALID_UTF8:
        text = raw.decode("utf-8", "replace")
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"hex": raw.hex(), "ids": ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    prompts = []
    for text, counts in [
        ("<image>\n<|grounding|>Convert the document to markdown.", [1121]),
        ("<image>\nFree OCR.", [257]),
        ("  <image>\n<|grounding|>Convert the document to markdown. ", [401]),
        ("\u3000\n<image>Compare <image> and describe.\t", [257, 545]),
        ("No image, just text.", []),
    ]:
        prompts.append({"text": text, "image_token_counts": counts,
                        "ids": spec_prompt(tok, text, counts)})
    json.dump({"tokenizer": "../shared/model-files/deepseek-ocr2/tokenizer.json",
               "cases": cases, "prompts": prompts}, sys.stdout, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
