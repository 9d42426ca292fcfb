#!/usr/bin/env bash
# The GPU check (issue #18), on one H100/H200 machine, from the repository root, with the bundle of
# scripts/device-bundle.sh; about 8 minutes:
#   1. `dsocr info`
#   2. every [cuda] Catch2 test (kernels against the libtorch reference, fast path vs reference)
#   3. tiny parity: the demo model's greedy tokens for one page, CPU vs GPU (float32 both: equal;
#      bfloat16 on the GPU: the shared prefix is printed)
#   4. a full-size random-weight checkpoint made there (`dsocr make-model --preset full`)
#   5. bench/gpu_bench.py: real A4 + Letter pages at concurrency 1, 32, 128 -> gpu-c{N}.json
#
#   ./scripts/gpu-check.sh [BUNDLE]
# Environment: OUT (where results/gpu-*.json and logs.tar.gz (JUnit reports, logs) go; default
# ./gpu-check-out),
# PYTHON (default python3), GPU_CHECK_CONCURRENCY (default 1,32,128), GPU_CHECK_MAX_TOKENS
# (default 1000), GPU_CHECK_BENCH_TIMEOUT (seconds per concurrency, default 150),
# GPU_CHECK_NO_GRAPHS_CONCURRENCY (the same bench with --cuda-graphs=false; default 1,128; empty:
# skipped),
# GPU_CHECK_STEPS (default "info tests parity bench").
# With the device tool: carry ["dist/dsocr-device-bundle.tar.xz"], command
#   ./scripts/gpu-check.sh    (results come back under $OUT/results; copy them to bench/results)
# Exit status 1 when a test or the parity check failed; the bench's numbers are read, not asserted.
set -uo pipefail
BUNDLE="${1:-dist/dsocr-device-bundle.tar.xz}"
source "$(dirname "${BASH_SOURCE[0]}")/device-env.sh"
OUT="${OUT:-$(pwd)/gpu-check-out}"
STEPS="${GPU_CHECK_STEPS:-info tests parity bench}"
LOGS="$WORK/logs"
mkdir -p "$OUT/results" "$LOGS"
trap 'tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs; rm -rf "$WORK"' EXIT
DSOCR="$DIR/bin/dsocr"
failures=()
step() { echo; echo "== $* ($(date +%T))"; }
wants() { [[ " $STEPS " == *" $1 "* ]]; }

if wants info; then
  step "dsocr info"
  "$DSOCR" info || { echo "gpu-check.sh: dsocr does not start here" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv || true
fi

if wants tests; then
  step "[cuda] tests"
  for t in "$DIR"/bin/*_test; do
    name="$(basename "$t")"
    # Catch2 2.x exits with the number of tests listed: the text, not the status, says it ran.
    listing="$("$t" "[cuda]" --list-tests 2>&1)"
    if [[ ! "$listing" =~ ([0-9]+)\ matching\ test\ case ]]; then
      failures+=("$name (does not start)")
      echo "$name: does not start: $(tail -c 2000 <<<"$listing")"
      continue
    fi
    ((BASH_REMATCH[1] > 0)) || continue
    if "$t" "[cuda]" -r junit -o "$LOGS/$name.xml" >"$LOGS/$name.log" 2>&1; then
      echo "$name: $(grep -c '<testcase ' "$LOGS/$name.xml") [cuda] test cases passed"
    else
      failures+=("$name [cuda]")
      echo "$name: FAILED"
      "$t" "[cuda]" -s 2>&1 | grep -E -B2 -A12 "FAILED|REQUIRE|CHECK\(" | tail -60
    fi
  done
fi

if wants parity; then
  step "tiny parity, CPU vs GPU (demo model, one page, greedy)"
  PAGE="$WORK/parity.png"
  "$PYTHON" -c "import sys; sys.path.insert(0, 'tests/python'); import image_corpus; image_corpus.page(1190, 1684).save('$PAGE')"
  gen() {
    "$DSOCR" generate --model demo --image "$PAGE" --prompt "<image>
<|grounding|>Convert the document to markdown." --max-tokens 48 --json "$@" 2>>"$LOGS/parity.log"
  }
  cpu_ids="$(gen --device cpu --dtype float32 | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ids"])')"
  gpu_ids="$(gen --device cuda --dtype float32 | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ids"])')"
  bf16_ids="$(gen --device cuda --dtype bfloat16 | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ids"])')"
  echo "cpu  f32: $cpu_ids"
  echo "cuda f32: $gpu_ids"
  echo "cuda bf16: $bf16_ids"
  if [[ -n "$cpu_ids" && "$cpu_ids" == "$gpu_ids" ]]; then
    echo "parity: float32 CPU and GPU tokens equal"
  else
    failures+=("parity")
    echo "parity: FAILED (float32 CPU and GPU tokens differ; log: parity.log)"
  fi
  "$PYTHON" -c "
a, b = $cpu_ids, $bf16_ids
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f'bfloat16 GPU shares the first {n} of {len(a)} tokens with float32 CPU')" || true
fi

if wants bench; then
  step "full-size random checkpoint"
  MODEL="${GPU_CHECK_MODEL:-/tmp/dsocr-full-bf16}"
  [[ -f "$MODEL/config.json" ]] || "$DSOCR" make-model --preset full --dtype bf16 --out "$MODEL" || failures+=("make-model")
  # The fast path (FlashInfer, grouped MoE, graphs: full size only, head_dim 128) with and without
  # CUDA graphs on one page: the shared prefix of greedy tokens is printed (random weights have
  # near-flat logits, so a rounding difference may end it early; not asserted).
  step "full size: greedy tokens with and without CUDA graphs"
  PAGE_FULL="$WORK/full.png"
  "$PYTHON" -c "import sys; sys.path.insert(0, 'tests/python'); import image_corpus; image_corpus.page(1224, 1584).save('$PAGE_FULL')"
  full_ids() {
    "$DSOCR" generate --model "$MODEL" --image "$PAGE_FULL" --prompt "<image>
<|grounding|>Convert the document to markdown." --max-tokens 64 --json "$@" 2>>"$LOGS/parity.log" |
      "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ids"])'
  }
  graphs_ids="$(full_ids)"
  eager_ids="$(full_ids --cuda-graphs=false)"
  "$PYTHON" -c "
a, b = ${graphs_ids:-[]}, ${eager_ids:-[]}
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f'graphs vs eager: the first {n} of {len(a)} greedy tokens equal')" || failures+=("full-size generate")
  step "bench (pages/s)"
  PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu_bench.py --dsocr "$DSOCR" --model "$MODEL" \
    --concurrency "${GPU_CHECK_CONCURRENCY:-1,32,128}" --max-tokens "${GPU_CHECK_MAX_TOKENS:-1000}" \
    --timeout "${GPU_CHECK_BENCH_TIMEOUT:-150}" --out-dir "$OUT/results" --commit "$DSOCR_COMMIT" ||
    failures+=("bench")
  # The same without CUDA graphs, side by side (GPU_CHECK_NO_GRAPHS_CONCURRENCY, empty: skip).
  if [[ -n "${GPU_CHECK_NO_GRAPHS_CONCURRENCY-1,128}" ]]; then
    step "bench without CUDA graphs"
    PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu_bench.py --dsocr "$DSOCR" --model "$MODEL" \
      --concurrency "${GPU_CHECK_NO_GRAPHS_CONCURRENCY-1,128}" --max-tokens "${GPU_CHECK_MAX_TOKENS:-1000}" \
      --timeout "${GPU_CHECK_BENCH_TIMEOUT:-150}" --out-dir "$OUT/results" --commit "$DSOCR_COMMIT" \
      --label no-graphs --extra=--cuda-graphs=false || failures+=("bench without graphs")
  fi
fi

echo
if ((${#failures[@]})); then
  echo "gpu-check: FAILED: ${failures[*]}"
  exit 1
fi
echo "gpu-check: passed"
