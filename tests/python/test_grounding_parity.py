"""server/grounding against a transcription of the official scripts' Python (spec §11).

The rewrite (run_dpsk_ocr2_image.py / HF save_results, and run_dpsk_ocr2_pdf.py per page) and
the pixel boxes (int(v / 999 * W) of the eval'd list) are run in Python on thousands of
generated model outputs, built from the tags' pieces so that well-formed, nested, partial,
duplicated and malformed tags all occur, and compared with build/bin/grounding_tool byte for
byte (a label with a tab or newline makes the tool's lines ambiguous to read, not to compare).
"""
import ast
import random
import re
import subprocess

import pytest

from conftest import BIN_DIR

PATTERN = re.compile(r'(<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>)', re.DOTALL)
PIECES = ["<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|ref|>image<|/ref|>", "image", "title",
          "text", "[[1, 2, 500, 999]]", "[[0,0,999,999],[10,20,30,40]]", "[[1,2,3]]", "[]",
          "[[1.5,2,3,4]]", "[[999, 999, 999, 999],]", "\n", "\n\n\n", "\\coloneqq", "\\eqqcolon",
          "x", " ", "# Title", "$a$", "[[1,2,3,4]] # note", "[[5, # x\n 6, 7, 8]]"]


def matches(text):
    found = PATTERN.findall(text)
    images = [m[0] for m in found if "<|ref|>image<|/ref|>" in m[0]]
    others = [m[0] for m in found if "<|ref|>image<|/ref|>" not in m[0]]
    return found, images, others


def image_script(text):
    _, images, others = matches(text)
    for idx, match in enumerate(images):
        text = text.replace(match, "![](images/" + str(idx) + ".jpg)\n")
    for match in others:
        text = text.replace(match, "").replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    return text


def pdf_script(text, page):
    _, images, others = matches(text)
    for idx, match in enumerate(images):
        text = text.replace(match, "![](images/" + str(page) + "_" + str(idx) + ".jpg)\n")
    for match in others:
        text = (text.replace(match, "").replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
                .replace("\n\n\n\n", "\n\n").replace("\n\n\n", "\n\n"))
    return text


def boxes(text, width, height):
    """The blocks the reference can draw: lists of 4-integer lists in 0..999, scaled."""
    lines = ""
    for _, label, det in matches(text)[0]:
        try:
            value = ast.literal_eval(det)
        except (ValueError, SyntaxError):
            continue
        if (not isinstance(value, list) or not value or
                not all(isinstance(b, list) and len(b) == 4 and
                        all(type(v) is int and 0 <= v <= 999 for v in b) for b in value)):
            continue
        pixels = []
        for x1, y1, x2, y2 in value:
            pixels += [int(x1 / 999 * width), int(y1 / 999 * height), int(x2 / 999 * width),
                       int(y2 / 999 * height)]
        lines += "\n" + label + "\t" + "".join(f"{v} " for v in pixels)
    return lines


def cases(seed, count):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30))) for _ in range(count)]


@pytest.mark.parametrize("width,height,page", [(1224, 1584, None), (111, 999, None),
                                               (1191, 1684, 4)])
def test_matches_the_official_scripts(width, height, page):
    texts = cases(seed=width, count=3000)
    args = [str(BIN_DIR / "grounding_tool"), str(width), str(height)]
    if page is not None:
        args.append(str(page))
    proc = subprocess.run(args, input="\0".join(texts).encode(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    outputs = proc.stdout.decode().split("\0")[:-1]
    assert len(outputs) == len(texts)
    for text, ours in zip(texts, outputs):
        rewritten = image_script(text) if page is None else pdf_script(text, page)
        assert ours == rewritten + boxes(text, width, height), repr(text)
