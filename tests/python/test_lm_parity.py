"""The language model (embeddings + image rows, paged attention, MoE, lm_head) and greedy
decoding against transformers' DeepseekOcr2 on the same random weights (spec §8-§10):
full-prompt logits within 1e-4 relative error in fp32, and every greedy token argmax-equivalent
under the reference's logits, for 64 steps on `tiny` and `small`.

The full-size run is documented and opt-in (DSOCR_FULL_PARITY=1; each side holds 13.5 GB in fp32,
ours runs first and exits before the reference loads)."""
import os
import subprocess

import pytest

import image_corpus
import lm_parity
from conftest import BIN_DIR


def make_model(tmp_path_factory, preset, dtype="f32"):
    out = tmp_path_factory.mktemp(preset)
    subprocess.run([str(BIN_DIR / "dsocr"), "make-model", "--preset", preset, "--dtype", dtype,
                    "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("img")
    a4, small = out / "a4.png", out / "small.png"
    image_corpus.page(1190, 1684).save(a4)
    image_corpus.page(500, 300).save(small)
    return [a4, small]


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_greedy_decode_matches_transformers(tmp_path_factory, images, preset):
    model = make_model(tmp_path_factory, preset)
    rel, bad, ours = lm_parity.compare(model, images, "<image>\n<image>\nFree OCR.", 64)
    assert len(ours["ids"]) == 64 and ours["finish_reason"] == "length"
    assert ours["image_tokens"] == 1121 + 257
    assert rel <= 1e-4, f"max relative logits error {rel:.3e}"
    assert bad == 0, f"{bad} tokens are not the reference's argmax"


def test_text_only_prompt(tmp_path_factory):
    model = make_model(tmp_path_factory, "tiny")
    rel, bad, ours = lm_parity.compare(model, [], "Hello there, how are you?", 32)
    assert ours["image_tokens"] == 0 and ours["prompt_ids"][0] == 0
    assert rel <= 1e-4 and bad == 0


@pytest.mark.skipif(os.environ.get("DSOCR_FULL_PARITY") != "1",
                    reason="full-size parity is opt-in: DSOCR_FULL_PARITY=1")
def test_full_size_logits(tmp_path_factory, images):
    model = make_model(tmp_path_factory, "full", "bf16")
    rel, bad, ours = lm_parity.compare(model, images[:1], "<image>\nFree OCR.", 8)
    print(f"full-size: max relative logits error {rel:.3e}, non-argmax tokens {bad}")
    assert rel <= 1e-4 and bad == 0
