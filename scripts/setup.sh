#!/usr/bin/env bash
# Installs everything dsocr needs and builds it. Idempotent: a rerun installs nothing new and
# rebuilds only what changed.
#
#   ./scripts/setup.sh              install (Debian packages, .venv with the pinned wheels), build
#   ./scripts/setup.sh --no-build   install only
#   ./scripts/setup.sh --with-container-tools
#                                   also podman, buildah, runc and debootstrap, configured for the
#                                   container test (scripts/container-test.sh, run by the test
#                                   suite when podman is installed; CI passes this option)
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
CONTAINER_TOOLS=0
for arg in "$@"; do
  case "$arg" in
    --no-build) DO_BUILD=0 ;;
    --with-container-tools) CONTAINER_TOOLS=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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
  chromium chromium-driver
  clang clang-format clang-tidy libclang-rt-14-dev
)
# Rootful podman with runc (crun fails on cgroup v1 hosts), its network stack, buildah for the
# image builds, debootstrap to make the base image without a registry, podman-compose for
# docker/compose.yaml.
CONTAINER_PACKAGES=(podman buildah runc netavark aardvark-dns debootstrap podman-compose)
if ((CONTAINER_TOOLS)); then DEBIAN_PACKAGES+=("${CONTAINER_PACKAGES[@]}"); fi
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

# Settings for every podman command on this machine (the container test runs plain `podman run`):
# runc, and ulimits above the defaults some hosts give containers (the server and HAProxy fail to
# start under a low nofile/nproc limit). A drop-in, so the distribution's files stay untouched.
if ((CONTAINER_TOOLS)); then
  conf=/etc/containers/containers.conf.d/50-dsocr.conf
  want='# Written by dsocr scripts/setup.sh --with-container-tools.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"'
  if [[ "$(cat "$conf" 2>/dev/null || true)" != "$want" ]]; then
    step "Configuring podman: $conf (runc, ulimits)"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$want" | $SUDO tee "$conf" >/dev/null
  fi
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
# FlashInfer's header-only CUDA kernels (cmake/DsocrFlashInfer.cmake) for a CUDA build: the wheel
# alone, without the JIT's dependencies (nothing of it runs; the build reads its headers).
FLASHINFER_WHEEL="flashinfer-python==0.7.2.post1"
if [[ "${DSOCR_CUDA:-}" != "OFF" ]] && { command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; } &&
   [[ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("flashinfer-python"))' 2>/dev/null)" != "${FLASHINFER_WHEEL#*==}" ]]; then
  step "Installing FlashInfer's CUDA headers ($FLASHINFER_WHEEL, no dependencies) into .venv"
  .venv/bin/python -m pip install --progress-bar off --no-deps "$FLASHINFER_WHEEL"
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
