#!/usr/bin/env bash
# On a GPU machine: unpacks the bundle made by scripts/device-bundle.sh and runs every Catch2
# test binary in it (the [cuda] tests included: they run for real when a GPU is present) against
# that machine's own torch. Run from the repository root (tests may read files of the checkout).
#
#   ./scripts/device-run.sh [BUNDLE]      default BUNDLE: dist/dsocr-device-bundle.tar.xz
# Environment: PYTHON (the interpreter whose torch to use; default python3), OUT (a folder for
# logs and JUnit reports, e.g. the device tool's $OUT).
# Ends with the line "N passed, N failed" counting test cases; exit status 1 if any failed.
set -uo pipefail
ROOT="$(pwd)"
BUNDLE="${1:-dist/dsocr-device-bundle.tar.xz}"
PYTHON="${PYTHON:-python3}"
[[ -f "$BUNDLE" ]] || { echo "device-run.sh: no bundle at $BUNDLE (run scripts/device-bundle.sh)" >&2; exit 2; }
TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" ||
  { echo "device-run.sh: $PYTHON cannot import torch" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
tar -C "$WORK" -xJf "$BUNDLE"
DIR="$WORK/dsocr-device-bundle"
export LD_LIBRARY_PATH="$DIR/lib:$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DSOCR_SOURCE_DIR="$ROOT"
REPORTS="${OUT:-$WORK/reports}"
mkdir -p "$REPORTS"

echo "== torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())')"
"$DIR/bin/dsocr" info || { echo "device-run.sh: dsocr does not start here" >&2; exit 1; }

passed=0 failed=0
for t in "$DIR"/bin/*_test; do
  name="$(basename "$t")"
  "$t" -r junit -o "$REPORTS/$name.xml" >/dev/null 2>"$REPORTS/$name.stderr"
  rc=$?
  # Count test cases from the JUnit report (one <testcase> each; failures carry <failure>/<error>).
  cases=$(grep -c "<testcase " "$REPORTS/$name.xml" || true)
  bad=$(grep -cE "<(failure|error) " "$REPORTS/$name.xml" || true)
  if ((rc != 0 && bad == 0)); then bad=1; fi   # crashed before writing a failure
  passed=$((passed + cases - bad)); failed=$((failed + bad))
  echo "$name: $((cases - bad))/$cases passed (exit $rc)"
  if ((rc != 0)); then "$t" 2>&1 | tail -40; fi
done
echo "$passed passed, $failed failed"
((failed == 0))
