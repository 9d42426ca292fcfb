"""A deterministic corpus of test images for the preprocessing parity tests: every tie case of
spec §4.2, the §4.7 table, tiny, huge and extreme sizes, and each decoder format (JPEG variants,
PNG modes incl. 16-bit and palette, WebP, BMP, TIFF, GIF, EXIF orientations)."""
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

# (width, height) saved as lossless RGB PNG: decoding is exact, so views must match bit for bit.
PNG_SIZES = [
    # spec §4.7 table
    (768, 768), (500, 300), (769, 500), (1000, 1000), (2000, 1000), (1920, 1080), (1190, 1684),
    (1224, 1584), (3000, 500), (1600, 1280),
    # exact ties of spec §4.2 (both sides of the area rule) and near-ties
    (1000, 800), (2000, 1600), (2500, 1000), (1000, 1200), (1750, 1000), (3500, 1000),
    (4500, 1000), (5500, 1000), (700, 1200), (1000, 3500), (1250, 1000), (800, 1000),
    (1000, 2500), (1536, 768), (769, 769), (768, 769), (769, 768), (1001, 800),
    # tiny and degenerate (zero-width contained global view for 1x3000)
    (1, 1), (1, 7), (7, 1), (2, 3), (1, 769), (1, 3000), (3000, 1),
    # extreme aspect ratios
    (2500, 50), (50, 2500), (5000, 100),
    # large pages
    (4000, 3000), (2480, 3508),
    # small images (up-scaled to the 1024 view)
    (100, 80), (300, 500), (640, 480), (33, 17),
]


def page(width, height, seed=0):
    """Document-like content: a gradient, noise blocks and text, so resampling is exercised."""
    rng = np.random.default_rng(seed + width * 7919 + height)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                     ((x + y) * 127 // max(width + height - 2, 1))], -1).astype(np.uint8)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.random((height, width, 1)) < 0.3
    arr = np.where(mask, noise, base)
    image = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(image)
    for k in range(0, height, 40):
        draw.text((5, k), "DeepSeek OCR 2 | tile test 0123456789", fill=(0, 0, 0))
    return image


def to_bytes(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_16bit(arr16: np.ndarray) -> bytes:
    """A 16-bit PNG (RGB or grey) written by hand: Pillow cannot write 16-bit RGB."""
    height, width = arr16.shape[:2]
    color_type = 2 if arr16.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(height))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) +
            chunk(b"IEND", b""))


def exif_with_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def corpus():
    """[(name, bytes, lossless)]: lossless means our decoder must match Pillow's exactly."""
    items = []
    for w, h in PNG_SIZES:
        items.append((f"png_{w}x{h}", to_bytes(page(w, h), "PNG"), True))
    a = page(900, 1200, seed=1)
    b = page(600, 400, seed=2)
    items += [
        ("jpeg_q90_900x1200", to_bytes(a, "JPEG", quality=90), False),
        ("jpeg_q75_600x400", to_bytes(b, "JPEG", quality=75), False),
        ("jpeg_progressive", to_bytes(a, "JPEG", quality=85, progressive=True), False),
        ("jpeg_444", to_bytes(b, "JPEG", quality=95, subsampling=0), False),
        ("jpeg_gray", to_bytes(b.convert("L"), "JPEG", quality=90), False),
        ("jpeg_cmyk", to_bytes(b.convert("CMYK"), "JPEG", quality=90), False),
        ("png_palette", to_bytes(a.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), True),
        ("png_gray", to_bytes(a.convert("L"), "PNG"), True),
        ("png_gray_alpha", to_bytes(b.convert("LA"), "PNG"), True),
        ("png_rgba", to_bytes(_with_alpha(b), "PNG"), True),
        ("png_16bit_rgb", png_16bit(np.asarray(b).astype(np.uint16) * 257 + 3), True),
        ("webp_lossless", to_bytes(b, "WEBP", lossless=True), True),
        ("webp_lossy", to_bytes(a, "WEBP", quality=80), False),
        ("webp_alpha", to_bytes(_with_alpha(b), "WEBP", lossless=True), True),
        ("bmp_24", to_bytes(b, "BMP"), True),
        ("bmp_8_palette", to_bytes(b.convert("P", palette=Image.Palette.ADAPTIVE), "BMP"), True),
        ("tiff_raw", to_bytes(b, "TIFF"), True),
        ("tiff_lzw", to_bytes(a, "TIFF", compression="tiff_lzw"), True),
        ("gif", to_bytes(b.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"), True),
        ("gif_interlaced", to_bytes(a.convert("P", palette=Image.Palette.ADAPTIVE), "GIF",
                                    interlace=True), True),
        ("gif_transparency", to_bytes(b.convert("P", palette=Image.Palette.ADAPTIVE), "GIF",
                                      transparency=0), True),
    ]
    small = page(300, 200, seed=3)
    for orientation in range(2, 9):
        items.append((f"jpeg_exif_orientation_{orientation}",
                      to_bytes(small, "JPEG", quality=92,
                               exif=exif_with_orientation(orientation)), False))
    items.append(("png_exif_orientation_6",
                  to_bytes(small, "PNG", exif=exif_with_orientation(6)), True))
    items.append(("webp_exif_orientation_8",
                  to_bytes(small, "WEBP", lossless=True, exif=exif_with_orientation(8)), True))
    # Animated WebP: the first frame, composed on its canvas as Pillow's WebPAnimDecoder does.
    second = page(300, 200, seed=5)
    items += [
        ("webp_animated_lossless", to_bytes(small, "WEBP", lossless=True, save_all=True,
                                            append_images=[second]), True),
        ("webp_animated_lossy", to_bytes(small, "WEBP", quality=80, save_all=True,
                                         append_images=[second]), False),
        ("webp_animated_alpha", to_bytes(_with_alpha(small), "WEBP", lossless=True, exact=True,
                                         save_all=True, append_images=[second]), True),
        ("webp_animated_offset_frame", webp_offset_first_frame(small, (400, 260), (40, 22)), True),
    ]
    # GIF frames outside the logical screen grow the canvas; no palette means greyscale.
    rng = np.random.default_rng(6)
    items += [
        ("gif_frame_past_screen", gif_by_hand((60, 40), (30, 20), rng.integers(0, 256, (50, 70)),
                                              palette=rng.integers(0, 256, 768)), True),
        ("gif_no_palette", gif_by_hand((90, 50), (0, 0), rng.integers(0, 256, (50, 90))), True),
    ]
    items.append(("jpeg_large_exif_6", to_bytes(page(1600, 1200, seed=4), "JPEG", quality=90,
                                                 exif=exif_with_orientation(6)), False))
    return items


def _with_alpha(image):
    alpha = Image.linear_gradient("L").resize(image.size)
    out = image.copy()
    out.putalpha(alpha)
    return out


def _riff_chunk(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def webp_offset_first_frame(image, canvas, offset):
    """An animated WebP whose only frame covers part of the canvas, at an (even) offset: Pillow
    cannot write one (its encoder always starts with a full-canvas frame)."""
    still = to_bytes(image, "WEBP", lossless=True)
    assert still[12:16] == b"VP8L"
    frame_bitstream = still[12:]  # the VP8L chunk, header included

    def u24(v):
        return struct.pack("<I", v)[:3]
    vp8x = bytes([0x02, 0, 0, 0]) + u24(canvas[0] - 1) + u24(canvas[1] - 1)
    anim = struct.pack("<IH", 0xFF00FF00, 0)  # background (ignored by decoders), loop forever
    anmf = (u24(offset[0] // 2) + u24(offset[1] // 2) + u24(image.width - 1) +
            u24(image.height - 1) + u24(100) + b"\0" + frame_bitstream)
    body = b"WEBP" + _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"ANIM", anim) + _riff_chunk(
        b"ANMF", anmf)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _gif_literal_lzw(indices) -> bytes:
    """LZW data of literal codes only (min code size 8): a clear code every 100 pixels keeps codes
    9 bits wide, so any indices can be written without an LZW encoder."""
    acc, bits, out = 0, 0, bytearray()
    codes = []
    for i, index in enumerate(indices):
        if i % 100 == 0:
            codes.append(256)
        codes.append(int(index))
    codes.append(257)
    for code in codes:
        acc |= code << bits
        bits += 9
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc & 0xFF)
    blocks = bytearray([8])
    for p in range(0, len(out), 255):
        chunk = out[p:p + 255]
        blocks += bytes([len(chunk)]) + chunk
    return bytes(blocks + b"\0")


def gif_by_hand(screen, offset, indices, palette=None):
    """A one-frame GIF89a: `indices` (height x width) at `offset` on a `screen`-sized logical
    screen (the frame may reach past it); a 256-entry global palette, or none."""
    height, width = indices.shape
    flags = 0xF7 if palette is not None else 0
    data = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], flags, 0, 0)
    if palette is not None:
        data += bytes(int(v) for v in palette)
    data += b"," + struct.pack("<HHHHB", offset[0], offset[1], width, height, 0)
    return data + _gif_literal_lzw(indices.reshape(-1)) + b";"
