"""The official DeepSeek-OCR-2 preprocessing (spec §4), written with Pillow as the reference
implementation: exif_transpose -> convert("RGB") -> closest grid -> resize + crop tiles ->
ImageOps.pad global view. Returns uint8 arrays, the same views `dsocr preprocess` writes."""
import io

import numpy as np
from PIL import Image, ImageOps

TILE, BASE = 768, 1024


def load_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def closest_grid(width, height):
    aspect = width / height
    ratios = sorted({(i, j) for n in range(2, 7) for i in range(1, n + 1) for j in range(1, n + 1)
                     if 2 <= i * j <= 6}, key=lambda r: r[0] * r[1])
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for i, j in ratios:
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best_diff, best = diff, (i, j)
        elif diff == best_diff and area > 0.5 * TILE * TILE * i * j:
            best = (i, j)
    return best


def preprocess(image: Image.Image):
    """(plan dict, global view array, [tile arrays])."""
    width, height = image.size
    if width <= TILE and height <= TILE:
        grid = (1, 1)
    else:
        grid = closest_grid(width, height)
    tiles = []
    if grid != (1, 1):
        resized = image.resize((TILE * grid[0], TILE * grid[1]))
        for k in range(grid[0] * grid[1]):
            col, row = k % grid[0], k // grid[0]
            box = (col * TILE, row * TILE, (col + 1) * TILE, (row + 1) * TILE)
            tiles.append(np.asarray(resized.crop(box)))
    contained = ImageOps.contain(image, (BASE, BASE))
    padded = ImageOps.pad(image, (BASE, BASE), color=(127, 127, 127))
    cw, ch = contained.size
    offset = [round((BASE - cw) * 0.5), 0] if cw != BASE else [0, round((BASE - ch) * 0.5) if ch != BASE else 0]
    n_tiles = len(tiles)
    plan = {"width": width, "height": height, "grid": list(grid), "tiles": n_tiles,
            "image_tokens": n_tiles * 144 + 256 + 1, "global_size": [cw, ch],
            "paste_offset": offset}
    return plan, np.asarray(padded), tiles
