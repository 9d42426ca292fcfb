#!/usr/bin/env bash
# Builds libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and runs them for a
# bounded time from their seed corpora (tests/fuzz/corpus/<target>/; inputs that grow coverage go
# to build/fuzz/<target>-corpus/, crashes to build/fuzz/). Registered as ctest tests (label fuzz);
# also handy by hand:
#   ./scripts/fuzz.sh safetensors_header 60       # target, seconds
#   ./scripts/fuzz.sh all 180                     # every target, 180 s each
# Targets: safetensors_header, image_probe, image_decode, tokenizer, chat_request, http_request,
# grounding.
# Exit status: non-zero when a target fails to build or finds a crash, leak, timeout or OOM.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:?target name (safetensors_header, image_probe, image_decode, tokenizer, chat_request, http_request, grounding) or all}"
SECONDS_TO_RUN="${2:-20}"
ALL_TARGETS=(safetensors_header image_probe image_decode tokenizer chat_request http_request grounding)
if [[ "$TARGET" == all ]]; then
  status=0
  for t in "${ALL_TARGETS[@]}"; do "$0" "$t" "$SECONDS_TO_RUN" || status=1; done
  exit $status
fi
OUT="${DSOCR_BUILD_DIR:-$ROOT/build}/fuzz"
mkdir -p "$OUT/$TARGET-corpus"
CXX="${FUZZ_CXX:-clang++}"
command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

# Per target: the product sources it links (compiled instrumented), system libraries (used
# uninstrumented, as the product uses them) and extra libFuzzer options.
LIBS=() FUZZ_OPTIONS=()
IMAGE_LIBS=(-lopencv_imgcodecs -lopencv_imgproc -lopencv_core -lgif -ltiff -lwebpdemux -lwebp)
TOKENIZER_SOURCES=(tokenizer/bpe_model.cpp tokenizer/incremental_decoder.cpp tokenizer/onig_regex.cpp
                   tokenizer/pipeline.cpp tokenizer/tokenizer.cpp tokenizer/unicode_classes.cpp
                   tokenizer/utf8.cpp)
case "$TARGET" in
  safetensors_header) SOURCES=(weights/safetensors_format.cpp common/status.cpp) ;;
  image_probe)
    SOURCES=(vision/image_decoder.cpp common/status.cpp) LIBS=("${IMAGE_LIBS[@]}") ;;
  image_decode)
    SOURCES=(vision/image_decoder.cpp common/status.cpp) LIBS=("${IMAGE_LIBS[@]}")
    # The target decodes with max_pixels 4M: no single allocation has a reason to reach 256 MiB
    # (the largest legitimate one is a 4M-pixel RGBA strip or frame, 16 MiB). Inputs up to 64 KiB
    # leave room for real compressed pages.
    FUZZ_OPTIONS=(-malloc_limit_mb=256 -max_len=65536) ;;
  tokenizer)
    SOURCES=("${TOKENIZER_SOURCES[@]}" common/status.cpp) LIBS=(-lonig)
    export DSOCR_FUZZ_TOKENIZER_JSON="${DSOCR_FUZZ_TOKENIZER_JSON:-$ROOT/../shared/model-files/deepseek-ocr2/tokenizer.json}"
    FUZZ_OPTIONS=(-max_len=4096) ;;
  chat_request)
    SOURCES=(server/chat_request.cpp server/image_fetcher.cpp engine/core/token_rules.cpp engine/core/sampling_params.cpp
             tokenizer/ocr_prompt.cpp "${TOKENIZER_SOURCES[@]}" common/status.cpp common/version.cpp)
    LIBS=(-lonig -lcurl)
    FUZZ_OPTIONS=(-max_len=8192) ;;
  http_request)
    SOURCES=(server/http/request_parser.cpp server/http/http_message.cpp common/status.cpp)
    LIBS=(-lz) ;;
  grounding)
    SOURCES=(server/grounding.cpp)
    FUZZ_OPTIONS=(-max_len=16384) ;;
  *) echo "fuzz.sh: unknown target $TARGET (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
esac

# Objects are compiled once per source into $OUT/obj (the flags are the same for every target)
# and rebuilt when the source or any of our headers it includes (from the compiler's -MMD
# dependency file) is newer; a change of the compile command itself empties $OUT/obj.
COMPILE=("$CXX" -std=c++20 -O1 -g -fsanitize=fuzzer-no-link,address,undefined
         -fno-sanitize-recover=undefined -I"$ROOT" -isystem /usr/include/opencv4
         -DDSOCR_VERSION_STRING='"fuzz"' -DDSOCR_BUILD_TYPE_STRING='"fuzz"'
         "-DDSOCR_DEFAULT_MODEL_FILES_DIR=\"$ROOT/model-files/deepseek-ocr2\"")
if [[ "$(cat "$OUT/obj/command" 2>/dev/null)" != "${COMPILE[*]}" ]]; then
  rm -rf "$OUT/obj" && mkdir -p "$OUT/obj" && echo "${COMPILE[*]}" > "$OUT/obj/command"
fi
stale() {  # stale OBJ: whether OBJ is missing or older than a file its dependency list names
  local obj=$1 dep
  [[ -e "$obj" && -e "$obj.d" ]] || return 0
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$obj.d"); do
    [[ "$dep" -nt "$obj" ]] && return 0
  done
  return 1
}
newer_than() {  # newer_than FILE PATHS...: whether FILE is missing or older than one of PATHS
  local file=$1 p; shift
  [[ -e "$file" ]] || return 0
  for p in "$@"; do [[ "$p" -nt "$file" ]] && return 0; done
  return 1
}
OBJECTS=()
for src in "tests/fuzz/${TARGET}_fuzz.cpp" "${SOURCES[@]}"; do
  obj="$OUT/obj/${src%.cpp}.o"
  OBJECTS+=("$obj")
  if stale "$obj"; then
    echo "fuzz.sh: compiling $src"
    mkdir -p "$(dirname "$obj")"
    "${COMPILE[@]}" -MMD -MF "$obj.d" -c "$ROOT/$src" -o "$obj.tmp"
    mv "$obj.tmp" "$obj"
  fi
done
BIN="$OUT/$TARGET-fuzzer"
if newer_than "$BIN" "${OBJECTS[@]}"; then
  echo "fuzz.sh: linking $TARGET-fuzzer"
  "$CXX" -fsanitize=fuzzer,address,undefined "${OBJECTS[@]}" "${LIBS[@]}" -o "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
fi
cd "$OUT"
set +e
"$BIN" -max_total_time="$SECONDS_TO_RUN" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    "${FUZZ_OPTIONS[@]}" "$OUT/$TARGET-corpus" "$ROOT/tests/fuzz/corpus/$TARGET" > "$OUT/$TARGET.log" 2>&1
STATUS=$?
set -e
tail -15 "$OUT/$TARGET.log"
[[ $STATUS -eq 0 ]] || echo "fuzz.sh: $TARGET failed (exit $STATUS); full log: $OUT/$TARGET.log" >&2
exit $STATUS
