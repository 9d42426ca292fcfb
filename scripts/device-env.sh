# Sourced by scripts/device-run.sh and scripts/gpu-check.sh on a GPU machine: unpacks the bundle
# made by scripts/device-bundle.sh into a temporary folder (removed on exit) and points the dynamic
# linker at the bundle's libraries and the machine's own torch.
#   BUNDLE   the bundle (default dist/dsocr-device-bundle.tar.xz)
#   PYTHON   the interpreter whose torch to use (default python3)
# Sets: DIR (the unpacked bundle: DIR/bin, DIR/lib), WORK (its temporary parent), DSOCR_COMMIT.
BUNDLE="${BUNDLE:-dist/dsocr-device-bundle.tar.xz}"
PYTHON="${PYTHON:-python3}"
[[ -f "$BUNDLE" ]] || { echo "$0: no bundle at $BUNDLE (run scripts/device-bundle.sh)" >&2; exit 2; }
TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" ||
  { echo "$0: $PYTHON cannot import torch" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
tar -C "$WORK" -xJf "$BUNDLE"
DIR="$WORK/dsocr-device-bundle"
export LD_LIBRARY_PATH="$DIR/lib:$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DSOCR_SOURCE_DIR="$(pwd)"
# The tokenizer and config files the demo model and make-model copy (the build's copy is not here).
export DSOCR_MODEL_FILES_DIR="${DSOCR_MODEL_FILES_DIR:-$(pwd)/model-files/deepseek-ocr2}"
DSOCR_COMMIT="$(cat "$DIR/COMMIT" 2>/dev/null || echo unknown)"
export DSOCR_COMMIT
echo "== torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'), bundle of commit $DSOCR_COMMIT"
