#!/usr/bin/env bash
# Builds a libFuzzer target with clang (-fsanitize=fuzzer,address,undefined) and runs it for a
# bounded time from its seed corpus (tests/fuzz/corpus/<target>/; found crashes are written to
# build/fuzz/). Registered as a ctest test; also handy by hand:
#   ./scripts/fuzz.sh safetensors_header 60       # target, seconds
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:?target name, e.g. safetensors_header}"
SECONDS_TO_RUN="${2:-20}"
OUT="${DSOCR_BUILD_DIR:-$ROOT/build}/fuzz"
mkdir -p "$OUT/$TARGET-corpus"
CXX="${FUZZ_CXX:-clang++}"
command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
case "$TARGET" in
  safetensors_header) SOURCES=(weights/safetensors_format.cpp common/status.cpp) ;;
  *) echo "fuzz.sh: unknown target $TARGET" >&2; exit 2 ;;
esac
BIN="$OUT/$TARGET-fuzzer"
NEWEST_SOURCE=$(cd "$ROOT" && ls -t "tests/fuzz/${TARGET}_fuzz.cpp" "${SOURCES[@]}" weights/*.h common/*.h | head -1)
if [[ ! -x "$BIN" || "$ROOT/$NEWEST_SOURCE" -nt "$BIN" ]]; then
  (cd "$ROOT" && "$CXX" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -I. "tests/fuzz/${TARGET}_fuzz.cpp" "${SOURCES[@]}" -o "$BIN")
fi
cd "$OUT"
"$BIN" -max_total_time="$SECONDS_TO_RUN" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    "$OUT/$TARGET-corpus" "$ROOT/tests/fuzz/corpus/$TARGET" 2>&1 | tail -15
