"""vision::PdfDocument against PyMuPDF, the renderer of the official PDF script (spec §11.3).

A PDF written here with PyMuPDF (pages of mixed and fractional sizes, a /Rotate 90 page, vector
shapes, base-14 text, an embedded image) is rendered by both: PyMuPDF exactly as the script does
it (Matrix(2.0, 2.0), alpha=False, through PNG bytes to PIL, RGB), ours through
build/bin/pdf_render_tool. The sizes must be equal to the pixel. The pixels come from two
different rasterisers (MuPDF's and poppler's Splash), which anti-alias edges and glyphs
differently, so they are compared with a tolerance: the mean absolute difference per channel,
and the share of pixels that differ by more than a quarter of the range (edges only). A wrong
scale, offset, rotation, colour order or background fails both by far (checked below by shifting
one render by a few pixels).
"""
import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import BIN_DIR

pymupdf = pytest.importorskip("pymupdf")

EMBEDDED_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian fonts-dejavu-core
# Measured (PyMuPDF 1.28.2 / poppler 22.12): mean 0.19-2.8 levels, far pixels 0.1-1.8 % (the small
# text-dense page 5 is the worst); glyph and path edges only.
MEAN_TOLERANCE = 4.0         # levels, mean over all pixels and channels
FAR_PIXELS_TOLERANCE = 0.03  # share of pixels with a channel off by more than 64 levels


def write_pdf(path):
    doc = pymupdf.open()
    gradient = np.zeros((64, 96, 3), np.uint8)
    gradient[..., 0] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    gradient[..., 1] = np.linspace(0, 255, 64, dtype=np.uint8)[:, None]
    png = io.BytesIO()
    Image.fromarray(gradient).save(png, "PNG")
    for width, height, rotation in [(612, 792, 0), (595.276, 841.89, 0), (400, 250, 0),
                                    (300, 500, 90), (200.3, 150.7, 0)]:
        page = doc.new_page(width=width, height=height)
        page.draw_rect(pymupdf.Rect(20, 20, width / 2, height / 3), color=(1, 0, 0),
                       fill=(0, 0, 1), width=3)
        page.draw_circle((width * 0.7, height * 0.6), min(width, height) / 6, color=(0, 0.5, 0),
                         fill=(1, 1, 0))
        # An embedded font: both renderers draw the same outlines. (A base-14 font that is not
        # embedded is substituted: MuPDF has Nimbus Sans built in, poppler asks fontconfig,
        # which gives DejaVu Sans unless fonts-urw-base35 is installed; see
        # test_base14_substitution.)
        page.insert_text((24, height * 0.45), "Parity 0123 ABC xyz", fontsize=18,
                         fontname="dejavu", fontfile=EMBEDDED_FONT)
        page.insert_image(pymupdf.Rect(24, height * 0.7, 24 + 96, height * 0.7 + 64),
                          stream=png.getvalue())
        if rotation:
            page.set_rotation(rotation)
    doc.save(str(path))


def pymupdf_pages(path):
    """As run_dpsk_ocr2_pdf.py renders: 144 dpi, no alpha, PNG bytes, PIL, RGB."""
    pages = []
    with pymupdf.open(str(path)) as doc:
        for page in doc:
            pixmap = page.get_pixmap(matrix=pymupdf.Matrix(2.0, 2.0), alpha=False)
            image = Image.open(io.BytesIO(pixmap.tobytes("png"))).convert("RGB")
            pages.append(np.asarray(image))
    return pages


def our_pages(path, out_dir):
    proc = subprocess.run([str(BIN_DIR / "pdf_render_tool"), str(path), str(out_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count = len(proc.stdout.splitlines())
    return [np.asarray(Image.open(out_dir / f"page_{n}.ppm").convert("RGB"))
            for n in range(1, count + 1)]


def differences(ours, theirs):
    delta = np.abs(ours.astype(int) - theirs.astype(int))
    return float(delta.mean()), float((delta.max(axis=2) > 64).mean())


def test_pages_match_pymupdf(tmp_path):
    pdf = tmp_path / "doc.pdf"
    write_pdf(pdf)
    theirs = pymupdf_pages(pdf)
    ours = our_pages(pdf, tmp_path)
    assert len(ours) == len(theirs) == 5
    report = []
    for number, (a, b) in enumerate(zip(ours, theirs), start=1):
        assert a.shape == b.shape, f"page {number}: ours {a.shape}, PyMuPDF {b.shape}"
        mean, far = differences(a, b)
        report.append(f"page {number} {a.shape[1]}x{a.shape[0]}: mean |diff| {mean:.3f}, "
                      f"far pixels {far:.4%}")
        assert mean <= MEAN_TOLERANCE, report[-1]
        assert far <= FAR_PIXELS_TOLERANCE, report[-1]
        shifted_far = differences(np.roll(a, 3, axis=1), b)[1]
        assert far < 0.5 * shifted_far, f"{report[-1]}; shifted by 3 px: {shifted_far:.4%}"
    print("\n".join(report))


def test_base14_substitution(tmp_path):
    """A non-embedded Helvetica: same size; the glyphs differ with the fonts installed."""
    pdf = tmp_path / "base14.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=300, height=120)
    page.insert_text((20, 60), "Helvetica, not embedded", fontsize=20, fontname="helv")
    doc.save(str(pdf))
    (theirs,) = pymupdf_pages(pdf)
    (ours,) = our_pages(pdf, tmp_path)
    assert ours.shape == theirs.shape
    mean, far = differences(ours, theirs)
    print(f"base-14 Helvetica, not embedded: mean |diff| {mean:.3f}, far pixels {far:.4%}")
