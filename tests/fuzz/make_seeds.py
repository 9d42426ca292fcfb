"""Writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/): a few small
valid images of every decoded format (and the issue #16 bombs) for image_probe and image_decode,
prompts and id lists for tokenizer, chat bodies and data: URIs for chat_request. Deterministic;
run with the project venv's Python from anywhere: .venv/bin/python tests/fuzz/make_seeds.py"""
import io
import json
import pathlib
import struct
import sys

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
import image_corpus  # noqa: E402


def save(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def tiff_with_duplicated_size():
    """Issue #16: ImageWidth/ImageLength 30000 first, then 10 (libtiff keeps the first)."""
    entries = [(256, 4, 30000), (257, 4, 30000), (256, 4, 10), (257, 4, 10), (258, 3, 8),
               (259, 3, 1), (262, 3, 1), (273, 4, None), (277, 3, 1), (278, 4, 10),
               (279, 4, 100)]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\0" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        value = data_offset if value is None else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return out + struct.pack("<I", 0) + bytes(100)


def image_seeds():
    rng = np.random.default_rng(16)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB")
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    other = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "baseline.jpg": save(rgb, "JPEG", quality=80),
        "progressive.jpg": save(rgb, "JPEG", quality=80, progressive=True),
        "exif6.jpg": save(rgb, "JPEG", quality=80, exif=image_corpus.exif_with_orientation(6)),
        "grey.jpg": save(rgb.convert("L"), "JPEG"),
        "rgb.png": save(rgb, "PNG"),
        "palette.png": save(palette, "PNG"),
        "rgba.png": save(rgba, "PNG"),
        "grey_alpha.png": save(rgb.convert("LA"), "PNG"),
        "lossy.webp": save(rgb, "WEBP", quality=70),
        "lossless.webp": save(rgba, "WEBP", lossless=True),
        "exif8.webp": save(rgb, "WEBP", lossless=True, exif=image_corpus.exif_with_orientation(8)),
        "animated.webp": save(rgb, "WEBP", lossless=True, save_all=True, append_images=[other]),
        "animated_offset.webp": image_corpus.webp_offset_first_frame(rgb, (26, 18), (4, 2)),
        "rgb.bmp": save(rgb, "BMP"),
        "palette.bmp": save(palette, "BMP"),
        "raw.tiff": save(rgb, "TIFF"),
        "lzw.tiff": save(rgb, "TIFF", compression="tiff_lzw"),
        "deflate.tiff": save(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "packbits_tiled.tiff": save(rgb, "TIFF", compression="packbits", tile=(16, 16)),
        "duplicated_size.tiff": tiff_with_duplicated_size(),
        "palette.gif": save(palette, "GIF"),
        "interlaced.gif": save(palette, "GIF", interlace=True, transparency=3),
        "frame_past_screen.gif": image_corpus.gif_by_hand((8, 8), (4, 2),
                                                          rng.integers(0, 256, (6, 9)),
                                                          palette=rng.integers(0, 256, 768)),
        "huge_frame.gif": image_corpus.gif_by_hand((64, 64), (0, 0), np.zeros((1, 3), np.uint8))
        .replace(struct.pack("<HHHH", 0, 0, 3, 1), struct.pack("<HHHH", 0, 0, 65535, 65535)),
    }


TOKENIZER_TEXTS = [
    b"\x00<|grounding|>Convert the document to markdown.",
    b"\x00<image>\nFree OCR.",
    "\x00| 表格 | 数据 |\n|---|---|\n| 1 | 2 |\n\\(x^2\\) — naïve café 😀".encode(),
    b"\x01<|ref|>title<|/ref|><|det|>[[12, 34, 567, 890]]<|/det|>\n# Heading\n\n",
    b"\x00\xff\xfe invalid \xc3( utf-8 \xe2\x82",
    b"\x00   leading spaces\t\ttabs\r\n\r\nnumbers 1234567890 3.14159",
    # decode seeds: 24-bit little-endian ids (bit 2 of the first byte: ids near the top)
    b"\x01" + bytes(range(0, 60)),
    b"\x05" + bytes(range(200, 255)),
    b"\x03" + b"\x10\x27\x00\x20\x4e\x00\xa0\x86\x01\xff\xff\x01",
]

CHAT_BODIES = [
    {"model": "demo", "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "<|grounding|>Convert the document to markdown."}]}]},
    {"model": "demo", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "user", "content": "hello"}], "temperature": 0.5, "top_p": 0.9,
     "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "stop": ["</s>", "\n\n"],
     "seed": 7, "skip_special_tokens": False},
    {"model": "demo", "messages": [{"role": "system", "content": "x"}, {"role": "user",
     "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
     "task": "free", "ngram_size": 30, "ngram_window": 90, "ngram_whitelist": [128821, 128822],
     "stop_token_ids": [1, 2], "loop_min_span": 8, "loop_max_period": 64, "n": 1,
     "max_completion_tokens": 100, "logprobs": False},
    {"model": "demo", "messages": []},
    {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}], "model": 3},
]

DATA_URIS = [
    b"\x01data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1Pe",
    b"\x01data:image/jpeg;base64,/9j/4AAQ SkZJ\nRgABAQ==",
    b"\x01data:;base64,-_-_",
    b"\x01data:text/plain,hello",
    b"\x01203.0.113.7",
    b"\x01::ffff:10.0.0.1",
]


def main():
    corpus = HERE / "corpus"
    for target in ("image_probe", "image_decode"):
        (corpus / target).mkdir(parents=True, exist_ok=True)
        for name, data in image_seeds().items():
            (corpus / target / name).write_bytes(data)
    (corpus / "tokenizer").mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(TOKENIZER_TEXTS):
        (corpus / "tokenizer" / f"seed_{i}").write_bytes(text)
    (corpus / "chat_request").mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(CHAT_BODIES):
        (corpus / "chat_request" / f"body_{i}.json").write_bytes(b"\x00" + json.dumps(body).encode())
    for i, uri in enumerate(DATA_URIS):
        (corpus / "chat_request" / f"uri_{i}").write_bytes(uri)


if __name__ == "__main__":
    main()
