#!/usr/bin/env bash
# Packs what a GPU machine needs to run dsocr's binaries and tests into one file:
#   dist/dsocr-device-bundle.tar.xz  (git-ignored; carry it to the GPU machine)
# Contents: build/bin/* (servers, CLI, Catch2 test binaries), every shared library they need
# that is neither part of glibc nor of torch (the GPU machine brings its own torch 2.11 + CUDA),
# and scripts/device-run.sh. Run scripts/device-run.sh there to unpack it and run the tests.
#
#   ./scripts/device-bundle.sh            build (incrementally) and pack
#   DSOCR_BUILD_DIR=build-x ./scripts/device-bundle.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DSOCR_BUILD_DIR:-build}"
NAME=dsocr-device-bundle
STAGE="dist/$NAME"
LIMIT_MIB=60

cmake --build "$BUILD_DIR" -j "${DSOCR_JOBS:-$(nproc)}"
grep -q "DSOCR_CUDA:BOOL=ON" "$BUILD_DIR/CMakeCache.txt" ||
  echo "device-bundle.sh: warning: $BUILD_DIR was configured without DSOCR_CUDA; the GPU kernels are not in it" >&2

rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib"
for f in "$BUILD_DIR"/bin/*; do
  [[ -f "$f" && -x "$f" ]] && cp "$f" "$STAGE/bin/"
done
cp scripts/device-run.sh "$STAGE/"
# The commit the binaries were built from ("+dirty" when the tree had changes), for the results.
echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)" > "$STAGE/COMMIT"

# glibc's own libraries come from the GPU machine; torch's and NVIDIA's from its torch install.
skip='/(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux[^/]*)\.so|/(torch|nvidia|triton)/|linux-vdso'
declare -A copied=()
for f in "$STAGE"/bin/*; do
  while read -r lib; do
    [[ -z "$lib" || "$lib" =~ $skip || -n "${copied[$lib]:-}" ]] && continue
    copied[$lib]=1
    cp -L "$lib" "$STAGE/lib/"
  done < <(ldd "$f" | awk '/=> \// {print $3}')
done
unresolved=$(for f in "$STAGE"/bin/*; do ldd "$f" | grep "not found" | grep -vE 'libtorch|libc10|kineto' || true; done)
[[ -z "$unresolved" ]] || { echo "device-bundle.sh: unresolved libraries:" >&2; echo "$unresolved" >&2; exit 1; }

tar -C dist -cf - "$NAME" | xz -T0 -6 > "dist/$NAME.tar.xz"
size=$(stat -c %s "dist/$NAME.tar.xz")
echo "dist/$NAME.tar.xz: $((size / 1048576)) MiB, $(ls "$STAGE/bin" | wc -l) binaries, ${#copied[@]} libraries"
if ((size > LIMIT_MIB * 1048576)); then
  echo "device-bundle.sh: bundle exceeds ${LIMIT_MIB} MiB (the device tool carries 64 MiB in all)" >&2
  exit 1
fi
