"""Language-model parity: `dsocr generate --dump-logits` against transformers' DeepseekOcr2 run
teacher-forced on the same prompt + generated tokens, with pixel tensors from `dsocr encode`.

    python tests/python/lm_parity.py MODEL_DIR [--max-tokens 64] [--image F]...   (documented run)
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from conftest import BIN_DIR  # noqa: E402
from hf_reference import load_reference  # noqa: E402


def run_ours(model_dir, images, prompt, max_tokens, workdir, extra=()):
    logits_path = pathlib.Path(workdir) / "logits.safetensors"
    cmd = [str(BIN_DIR / "dsocr"), "generate", "--model", str(model_dir), "--prompt", prompt,
           "--max-tokens", str(max_tokens), "--json", "--dump-logits", str(logits_path), *extra]
    for image in images:
        cmd += ["--image", str(image)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    out["logits"] = load_file(str(logits_path))["logits"]
    return out


def pixel_inputs(model_dir, images, workdir):
    if not images:
        return {}
    dump_path = pathlib.Path(workdir) / "pixels.safetensors"
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "encode", "--model", str(model_dir), "--out",
                           str(dump_path), *map(str, images)], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr
    dump = load_file(str(dump_path))
    inputs = {"pixel_values": dump["pixel_values"]}
    if "pixel_values_local" in dump:
        inputs["pixel_values_local"] = dump["pixel_values_local"]
        inputs["num_local_patches"] = dump["num_local_patches"].tolist()
    return inputs


def reference_logits(model_dir, ours, pixels):
    model, info = load_reference(pathlib.Path(model_dir))
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = ours["prompt_ids"] + ours["ids"][:-1]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), **pixels)
    return out.logits[0, len(ours["prompt_ids"]) - 1:].float()


def compare(model_dir, images, prompt, max_tokens=64):
    """(max relative error of the logits, number of steps whose token is not argmax-equivalent)."""
    with tempfile.TemporaryDirectory() as workdir:
        ours = run_ours(model_dir, images, prompt, max_tokens, workdir, ("--no-ngram",))
        pixels = pixel_inputs(model_dir, images, workdir)
    ref = reference_logits(model_dir, ours, pixels)
    mine = ours["logits"]
    assert mine.shape == ref.shape, (mine.shape, ref.shape)
    rel = float((mine.double() - ref.double()).abs().max() / ref.abs().max())
    # A token is argmax-equivalent when the reference ranks it within float error of its best.
    tol = 1e-4 * float(ref.abs().max())
    chosen = ref[torch.arange(len(ours["ids"])), torch.tensor(ours["ids"])]
    mismatches = int((chosen < ref.max(-1).values - tol).sum())
    return rel, mismatches, ours


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--prompt", default="<image>\n<|grounding|>Convert the document to markdown.")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    rel, bad, ours = compare(args.model_dir, args.image, args.prompt, args.max_tokens)
    print(f"steps={len(ours['ids'])} prompt_tokens={len(ours['prompt_ids'])} "
          f"max_rel_err={rel:.3e} non_argmax_tokens={bad}")
