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
BUNDLE="${1:-dist/dsocr-device-bundle.tar.xz}"
source "$(dirname "${BASH_SOURCE[0]}")/device-env.sh"
REPORTS="${OUT:-$WORK/reports}"
mkdir -p "$REPORTS"

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
