"""Compares a `dsocr encode` dump with transformers' DeepseekOcr2 fed the same pixel tensors.

Usable as a module (tests) and as a script for the documented full-size run:
    python tests/python/vision_parity.py MODEL_DIR DUMP.safetensors [--dtype float32|bfloat16]
"""
import pathlib
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from hf_reference import load_reference  # noqa: E402


def max_relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double(), ref.double()
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def cosine(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(ours.double().flatten(), ref.double().flatten(), dim=0))


def reference_taps(model, dump, dtype):
    """The same stages from the transformers model: SAM, encoder (query half), projector, blocks."""
    tower = model.model.vision_tower
    projector = model.model.multi_modal_projector
    out = {}
    views = [("global", dump["pixel_values"])]
    if "pixel_values_local" in dump:
        views.append(("tiles", dump["pixel_values_local"]))
    with torch.no_grad():
        for name, pixels in views:
            pixels = pixels.to(dtype)
            sam = tower.sam_encoder(pixels).last_hidden_state
            enc = tower(pixels).last_hidden_state
            out[f"sam_{name}"] = sam
            out[f"encoder_{name}"] = enc
            out[f"projector_{name}"] = projector(enc)
        counts = dump["num_local_patches"].tolist()
        features = model.model.get_image_features(
            dump["pixel_values"].to(dtype),
            dump["pixel_values_local"].to(dtype) if "pixel_values_local" in dump else None,
            counts if "pixel_values_local" in dump else None).pooler_output
        for i, block in enumerate(features):
            out[f"block_{i}"] = block
    return out


def compare(model_dir, dump_path, dtype="float32"):
    """{tap: (max relative error, cosine)} for every tap in the dump."""
    dump = load_file(str(dump_path))
    model, info = load_reference(pathlib.Path(model_dir), dtype=dtype)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref = reference_taps(model, dump, getattr(torch, dtype))
    results = {}
    for name, tensor in ref.items():
        ours = dump[name]
        assert ours.shape == tensor.shape, (name, ours.shape, tensor.shape)
        results[name] = (max_relative_error(ours, tensor.float()), cosine(ours, tensor.float()))
    return results


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("dump")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name, (rel, cos) in compare(args.model_dir, args.dump, args.dtype).items():
        print(f"{name:20s} max_rel_err={rel:.3e} cosine={cos:.8f}")
