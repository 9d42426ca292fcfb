"""The project virtualenv holds exactly the pinned oracles, and they can do what tests need."""
import importlib.metadata
import pathlib

from conftest import SOURCE_DIR


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in (SOURCE_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def test_every_pin_is_installed_at_its_version():
    pins = pinned_requirements()
    assert "torch" in pins and "transformers" in pins
    for name, version in pins.items():
        installed = importlib.metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: {installed} != {version}"


def test_transformers_has_the_native_deepseek_ocr2_model():
    from transformers import DeepseekOcr2Config, DeepseekOcr2ForConditionalGeneration  # noqa: F401


def test_shared_inputs_are_beside_the_checkout():
    shared = pathlib.Path(SOURCE_DIR).parent / "shared"
    assert (shared / "docs" / "spec-deepseek-ocr2.md").is_file()
    assert (shared / "model-files" / "deepseek-ocr2" / "tokenizer.json").is_file()
