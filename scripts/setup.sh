#!/usr/bin/env bash
# Installs everything dsocr needs and builds it. Idempotent: a rerun installs nothing new and
# rebuilds only what changed.
#
#   ./scripts/setup.sh              install (Debian packages, .venv with the pinned wheels), build
#   ./scripts/setup.sh --no-build   install only
#
# Environment:
#   DSOCR_BUILD_DIR   build directory (default: build)
#   DSOCR_BUILD_TYPE  CMake build type (default: Release)
#   DSOCR_CUDA        ON/OFF to force the CUDA kernels (default: ON when nvcc and a CUDA torch exist)
#   DSOCR_JOBS        parallel compile jobs (default: number of cores)
#   PYTHON            interpreter that creates .venv (default: python3, installed if missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${DSOCR_BUILD_DIR:-build}"
BUILD_TYPE="${DSOCR_BUILD_TYPE:-Release}"
JOBS="${DSOCR_JOBS:-$(nproc)}"
DO_BUILD=1
for arg in "$@"; do
  case "$arg" in
    --no-build) DO_BUILD=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# --- 1. Debian packages --------------------------------------------------------------------------
DEBIAN_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  python3 python3-venv python3-pip
  libcpp-httplib-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libopencv-dev
  libcurl4-openssl-dev libssl-dev zlib1g-dev libtiff-dev libwebp-dev catch2 libonig-dev libpcre2-dev libgif-dev
  libpoppler-cpp-dev
  clang clang-format clang-tidy libclang-rt-14-dev
)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  step "Installing Debian packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install packages" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step "Debian packages: all present"
fi

# --- 2. Python virtualenv with libtorch and the test oracles ------------------------------------
PYTHON_BIN="${PYTHON:-python3}"
REQ_HASH="$(sha256sum requirements.txt | cut -d' ' -f1)"
STAMP=".venv/.dsocr-requirements.sha256"
if [[ ! -x .venv/bin/python ]]; then
  step "Creating .venv with $($PYTHON_BIN --version 2>&1)"
  "$PYTHON_BIN" -m venv .venv
fi
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$REQ_HASH" ]]; then
  step "Installing requirements.txt into .venv (torch is ~4.6 GB; about 2 minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --progress-bar off -r requirements.txt
  echo "$REQ_HASH" > "$STAMP"
else
  step ".venv: requirements up to date"
fi

# --- 3. Configure and build ---------------------------------------------------------------------
if ((DO_BUILD)); then
  cmake_args=(-S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE"
              -DDSOCR_PYTHON="$ROOT/.venv/bin/python")
  [[ -n "${DSOCR_CUDA:-}" ]] && cmake_args+=(-DDSOCR_CUDA="$DSOCR_CUDA")
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" || -n "${DSOCR_CUDA:-}" ]]; then
    step "Configuring ($BUILD_TYPE) in $BUILD_DIR"
    cmake "${cmake_args[@]}"
  fi
  step "Building with $JOBS jobs"
  start=$(date +%s)
  cmake --build "$BUILD_DIR" -j "$JOBS"
  echo "built in $(( $(date +%s) - start )) s: $BUILD_DIR/bin/dsocr-server, $BUILD_DIR/bin/dsocr"
fi
