#!/usr/bin/env bash
# Runs the whole test suite: the Catch2 unit tests and the pytest suites, all through ctest.
# Builds first (incrementally), so the tests always match the sources.
#
#   ./scripts/test.sh                 everything
#   ./scripts/test.sh -L unit         only the Catch2 tests (any ctest arguments pass through)
#   ./scripts/test.sh -R Channel      tests whose name matches
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DSOCR_BUILD_DIR:-build}"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  echo "test.sh: no build in $BUILD_DIR; run ./scripts/setup.sh first" >&2
  exit 1
fi
cmake --build "$BUILD_DIR" -j "${DSOCR_JOBS:-$(nproc)}"
exec ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${DSOCR_TEST_JOBS:-$(nproc)}" "$@"
