"""`dsocr preprocess` against the official preprocessing run with Pillow (spec §4).

For every image of the corpus (>= 60: ties, the §4.7 table, tiny/huge/extreme sizes, every
decoder format, EXIF orientations):
  * the plan (grid, tiles, token count, contained size, paste offset) equals the reference;
  * the decoded pixels equal Pillow's for lossless formats; for lossy ones (JPEG, lossy WebP)
    the decoders may differ by at most 1 level (reported);
  * the global view and every tile are byte-identical to Pillow's resize of the same decoded
    pixels, and identical to Pillow's full pipeline whenever the decoders agree.
"""
import concurrent.futures
import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

import image_corpus
import pillow_reference
from conftest import BIN_DIR

CORPUS = image_corpus.corpus()


def run_preprocess(path, out_dir):
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "preprocess", str(path), "--out", str(out_dir),
                           "--decoded"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out_dir / "plan.json").read_text())
    read = lambda p: np.asarray(Image.open(p).convert("RGB"))  # noqa: E731
    tiles = [read(out_dir / f"tile_{k}.png") for k in range(plan["tiles"])]
    return plan, read(out_dir / "decoded.png"), read(out_dir / "global.png"), tiles


def check_one(name, data, lossless, tmp_path):
    path = tmp_path / f"{name}.img"
    path.write_bytes(data)
    plan, decoded, global_view, tiles = run_preprocess(path, tmp_path / name)
    reference_image = pillow_reference.load_rgb(data)
    reference = np.asarray(reference_image)
    assert decoded.shape == reference.shape, name
    delta = int(np.abs(decoded.astype(int) - reference.astype(int)).max()) if decoded.size else 0
    if lossless:
        assert delta == 0, f"{name}: decoded pixels differ from Pillow's by up to {delta}"
    else:
        assert delta <= 1, f"{name}: decoder differs from Pillow's by {delta} > 1"

    # Our resize of our decoded pixels == Pillow's resize of the same pixels, exactly.
    ref_plan, ref_global, ref_tiles = pillow_reference.preprocess(Image.fromarray(decoded, "RGB"))
    plan_core = {k: v for k, v in plan.items() if k != "content_hash"}
    assert plan_core == ref_plan, name
    assert np.array_equal(global_view, ref_global), f"{name}: global view differs"
    assert len(tiles) == len(ref_tiles)
    for k, (ours, theirs) in enumerate(zip(tiles, ref_tiles)):
        assert np.array_equal(ours, theirs), f"{name}: tile {k} differs"
    if delta == 0:
        full_plan, full_global, _ = pillow_reference.preprocess(reference_image)
        assert plan_core == full_plan
        assert np.array_equal(global_view, full_global)
    return name, delta


def test_corpus_size():
    assert len(CORPUS) >= 60


def test_preprocess_matches_pillow(tmp_path):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(check_one, name, data, lossless, tmp_path)
                   for name, data, lossless in CORPUS]
        results = [f.result() for f in futures]
    differing = {name: delta for name, delta in results if delta}
    print(f"\n{len(results)} images; decoder deltas vs Pillow (max level): {differing or 'none'}")


def test_16bit_grey_png_keeps_the_high_byte(tmp_path):
    """Documented deviation: Pillow clips 16-bit grey to 255 (a white page); we keep the high
    byte, as for 16-bit RGB (which Pillow also reduces to its high byte)."""
    grey = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "grey16.png"
    path.write_bytes(image_corpus.png_16bit(grey))
    _, decoded, _, _ = run_preprocess(path, tmp_path / "grey16")
    assert np.array_equal(decoded[..., 0], (grey >> 8).astype(np.uint8))
    assert np.array_equal(decoded[..., 0], decoded[..., 2])


def test_plan_matches_spec_table(tmp_path):
    """Spec §4.7, row by row."""
    table = [((768, 768), (1, 1), 0, (1024, 1024), (0, 0), 257),
             ((500, 300), (1, 1), 0, (1024, 614), (0, 205), 257),
             ((769, 500), (3, 2), 6, (1024, 666), (0, 179), 1121),
             ((1000, 1000), (2, 2), 4, (1024, 1024), (0, 0), 833),
             ((2000, 1000), (2, 1), 2, (1024, 512), (0, 256), 545),
             ((1920, 1080), (2, 1), 2, (1024, 576), (0, 224), 545),
             ((1190, 1684), (2, 3), 6, (724, 1024), (150, 0), 1121),
             ((1224, 1584), (2, 3), 6, (791, 1024), (116, 0), 1121),
             ((3000, 500), (6, 1), 6, (1024, 171), (0, 426), 1121),
             ((1600, 1280), (3, 2), 6, (1024, 819), (0, 102), 1121)]
    for (w, h), grid, tiles, size, offset, tokens in table:
        path = tmp_path / f"{w}x{h}.png"
        Image.new("RGB", (w, h), (200, 10, 10)).save(path)
        plan, *_ = run_preprocess(path, tmp_path / f"{w}x{h}")
        assert plan["grid"] == list(grid) and plan["tiles"] == tiles, (w, h, plan)
        assert plan["global_size"] == list(size) and plan["paste_offset"] == list(offset), (w, h)
        assert plan["image_tokens"] == tokens
        assert len(plan["content_hash"]) == 16


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"not an image at all", "unsupported image format"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4, "corrupt or truncated PNG"),
])
def test_bad_images_fail_clearly(tmp_path, data, message):
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "preprocess", str(path), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert message in proc.stderr
