"""`dsocr make-model` checkpoints against the reference loader: transformers' native
DeepseekOcr2 reads them with no missing, unexpected or mismatched tensor, and sees our values."""
import json
import subprocess

import pytest
import torch
from safetensors import safe_open

from conftest import BIN_DIR, SOURCE_DIR
from hf_reference import load_reference

SHARED = SOURCE_DIR.parent / "shared" / "model-files" / "deepseek-ocr2"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([str(BIN_DIR / "dsocr"), "make-model", "--preset", "tiny", "--seed", "3",
                    "--dtype", "f32", "--out", str(out)], check=True, capture_output=True)
    return out


def test_transformers_loads_it_strictly(tiny):
    model, info = load_reference(tiny)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    total = json.loads((tiny / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    assert sum(p.numel() for p in model.parameters()) * 4 == total


def test_transformers_sees_our_values(tiny):
    model, _ = load_reference(tiny)
    params = dict(model.named_parameters())
    with safe_open(str(tiny / "model-00001-of-000001.safetensors"), "pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}
    # Unrenamed tensors must be bit-identical after loading.
    lm_head = ours["lm_head.weight"]
    assert any(torch.equal(p, lm_head) for p in params.values())
    view_sep = ours["model.view_seperator"]
    assert any(p.shape == view_sep.shape and torch.equal(p, view_sep) for p in params.values())
    # Experts are fused by the loader: our per-expert matrices must appear stacked.
    gate0 = ours["model.layers.1.mlp.experts.0.gate_proj.weight"]
    assert any(p.dim() == 3 and any(torch.equal(p[0, r:r + gate0.shape[0]], gate0)
                                    for r in (0, p.shape[1] - gate0.shape[0]))
               for p in params.values())


def test_make_model_writes_what_the_official_repo_has(tiny):
    config = json.loads((tiny / "config.json").read_text())
    official = json.loads((SHARED / "config.json").read_text())
    assert set(official) <= set(config)  # every official key is there, plus dsocr_vision
    assert config["dsocr_vision"]["sam"]["width"] == 32
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny / name).read_bytes() == (SHARED / name).read_bytes()


def test_bad_arguments(tmp_path):
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "make-model", "--preset", "huge", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown preset 'huge'" in proc.stderr
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "make-model", "--preset", "tiny"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--out is required" in proc.stderr
