#!/usr/bin/env bash
# Style checks on the C++ files changed against a base revision (default: origin/main if it
# exists, else HEAD~1): clang-format (must produce no diff) and clang-tidy (.clang-tidy's checks,
# using build/compile_commands.json; tests are formatted but not tidied).
#
#   ./scripts/lint.sh              check changed files
#   ./scripts/lint.sh --all        check every file
#   ./scripts/lint.sh --fix        rewrite changed files with clang-format instead of checking
#   ./scripts/lint.sh --no-tidy    clang-format only (clang-tidy parses torch headers: slow)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DSOCR_BUILD_DIR:-build}"
ALL=0 FIX=0 TIDY=1
for arg in "$@"; do
  case "$arg" in
    --all) ALL=1 ;; --fix) FIX=1 ;; --no-tidy) TIDY=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "lint.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

pattern='^(common|tokenizer|weights|vision|engine|server|tests|bench)/.*\.(h|cpp|cu|cuh)$'
if ((ALL)); then
  mapfile -t files < <(git ls-files | grep -E "$pattern" || true)
else
  base=$(git rev-parse --verify -q origin/main || git rev-parse --verify -q HEAD~1 || true)
  mapfile -t files < <( { git diff --name-only --diff-filter=ACMR ${base:+"$base"};
                          git ls-files --others --exclude-standard; } | grep -E "$pattern" | sort -u || true)
fi
((${#files[@]})) || { echo "lint.sh: no C++ files to check"; exit 0; }

status=0
if ((FIX)); then
  clang-format -i "${files[@]}"
  echo "lint.sh: formatted ${#files[@]} files"
  exit 0
fi
for f in "${files[@]}"; do
  if ! diff -q <(clang-format "$f") "$f" >/dev/null; then
    echo "format: $f differs from clang-format (run ./scripts/lint.sh --fix)"
    status=1
  fi
done
if ((TIDY)); then
  [[ -f "$BUILD_DIR/compile_commands.json" ]] || { echo "lint.sh: build first (no compile_commands.json)"; exit 1; }
  mapfile -t tidy_files < <(printf '%s\n' "${files[@]}" | grep -E '\.cpp$' | grep -v '^tests/' || true)
  if ((${#tidy_files[@]})); then
    clang-tidy -p "$BUILD_DIR" --quiet "${tidy_files[@]}" || status=1
  fi
fi
((status == 0)) && echo "lint.sh: ${#files[@]} files clean"
exit $status
