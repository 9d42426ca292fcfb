# Every external dependency of dsocr, found in one place, in one order:
# Debian's libraries first, libtorch (from the project virtualenv's torch wheel) last, so that a
# library of the system is never shadowed by a copy bundled inside the wheel.

find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(fmt 9 REQUIRED)
find_package(spdlog 1.10 REQUIRED)
find_package(nlohmann_json 3.11 REQUIRED)
find_package(CURL REQUIRED)
find_package(ZLIB REQUIRED)                        # gzip/deflate request bodies
find_package(OpenSSL REQUIRED COMPONENTS Crypto)   # sha256 of downloaded files
find_package(OpenCV 4 REQUIRED COMPONENTS core imgproc imgcodecs)
find_package(GIF 5 REQUIRED)                       # first GIF frame (OpenCV 4.6 has no GIF codec)
# The TIFF directory as OpenCV's libtiff reads it (per-handle error handlers need libtiff 4.5), and
# animated WebP's first frame (OpenCV 4.6 refuses animations). Both come with libopencv-dev.
find_package(TIFF 4.5 REQUIRED)
pkg_check_modules(WEBP REQUIRED IMPORTED_TARGET libwebp libwebpdemux)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)  # the tests' HTTP client
pkg_check_modules(ONIG REQUIRED IMPORTED_TARGET oniguruma)
if(DSOCR_BUILD_TESTS)
  find_package(Catch2 2.13 REQUIRED)
  include(Catch)
endif()

# --- fmt: libtorch ships fmt 12 headers in its include directory, Debian's spdlog 1.10 is built
# against the system fmt 9. A file that includes both would see fmt 12 (torch's include dirs are
# searched before /usr/include) and fail to compile, or worse, mix ABIs. A build-tree folder that
# holds only a link to the system fmt is put first on every target's include path (-I is searched
# before torch's -isystem), so `#include <fmt/...>` always means the system's fmt.
get_target_property(_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
find_path(DSOCR_SYSTEM_FMT_INCLUDE fmt/format.h HINTS ${_fmt_includes} NO_CACHE REQUIRED)
set(DSOCR_FMT_SHIM ${CMAKE_BINARY_DIR}/fmt-shim)
file(MAKE_DIRECTORY ${DSOCR_FMT_SHIM})
file(CREATE_LINK ${DSOCR_SYSTEM_FMT_INCLUDE}/fmt ${DSOCR_FMT_SHIM}/fmt SYMBOLIC)
include_directories(BEFORE ${DSOCR_FMT_SHIM})

# --- libtorch, from the torch wheel in the project virtualenv (scripts/setup.sh installs it).
if(NOT EXISTS "${DSOCR_PYTHON}")
  message(FATAL_ERROR "No Python at DSOCR_PYTHON=${DSOCR_PYTHON}. Run ./scripts/setup.sh, which "
                      "creates .venv/ with the pinned torch wheel, or pass -DDSOCR_PYTHON=...")
endif()
execute_process(
  COMMAND "${DSOCR_PYTHON}" -c
          "import torch, torch.utils; print(torch.utils.cmake_prefix_path); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_query OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _torch_rc ERROR_VARIABLE _torch_err)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "Cannot import torch with ${DSOCR_PYTHON}: ${_torch_err}\n"
                      "Run ./scripts/setup.sh to (re)create the virtualenv.")
endif()
string(REPLACE "\n" ";" _torch_query "${_torch_query}")
list(GET _torch_query 0 DSOCR_TORCH_PREFIX)
list(LENGTH _torch_query _n)
set(DSOCR_TORCH_CUDA_VERSION "")
if(_n GREATER 1)
  list(GET _torch_query 1 DSOCR_TORCH_CUDA_VERSION)
endif()

# DSOCR_CUDA: device code for the GPUs we serve on. Default on when the wheel is a CUDA build and a
# CUDA compiler exists; without nvcc (a plain Debian machine) the wheel still works on the CPU.
include(CheckLanguage)
check_language(CUDA)
set(_cuda_default OFF)
if(DSOCR_TORCH_CUDA_VERSION AND CMAKE_CUDA_COMPILER)
  # The GPU engine's kernels (FlashInfer, CCCL 3.6) need nvcc 12 or newer; an older toolkit (Debian
  # 12's nvidia-cuda-toolkit is 11.8) gives a CPU build rather than a failed one.
  execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --version OUTPUT_VARIABLE _nvcc_version_text
                  ERROR_QUIET)
  string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _nvcc_release "${_nvcc_version_text}")
  if(CMAKE_MATCH_1 AND CMAKE_MATCH_1 GREATER_EQUAL 12)
    set(_cuda_default ON)
  else()
    message(STATUS "nvcc ${CMAKE_MATCH_1}.${CMAKE_MATCH_2} is older than 12: CPU build "
                   "(-DDSOCR_CUDA=ON to try anyway)")
  endif()
endif()
option(DSOCR_CUDA "Build CUDA kernels (sm_90 by default)" ${_cuda_default})
if(DSOCR_CUDA)
  if(NOT DSOCR_TORCH_CUDA_VERSION)
    message(FATAL_ERROR "DSOCR_CUDA=ON but the torch in ${DSOCR_PYTHON} is a CPU-only build")
  endif()
  # torch's config turns TORCH_CUDA_ARCH_LIST into -gencode flags for every CUDA target and
  # ignores CMAKE_CUDA_ARCHITECTURES; left unset it would build for eleven architectures.
  set(TORCH_CUDA_ARCH_LIST "9.0" CACHE STRING "GPU architectures of the CUDA kernels (H100/H200)")
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  set(CMAKE_CUDA_STANDARD 17)   # CMake 3.25 knows no CUDA20 dialect for nvcc
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  unset(CMAKE_CUDA_ARCHITECTURES)  # set per target (OFF): torch's -gencode flags decide
endif()

if(DSOCR_TORCH_CUDA_VERSION AND NOT CMAKE_CUDA_COMPILER)
  # A CUDA wheel on a machine without the CUDA toolkit (a plain Debian box): the wheel's
  # TorchConfig.cmake stops with "uses CUDA but I cannot find the CUDA libraries". The CPU part of
  # libtorch needs none of it, so link the wheel's libraries directly (the wheel's own RUNPATH finds
  # its CUDA libraries at run time; without a GPU they are never used).
  execute_process(
    COMMAND "${DSOCR_PYTHON}" -c
            "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__.split('+')[0]); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
    OUTPUT_VARIABLE _torch_info OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  string(REPLACE "\n" ";" _torch_info "${_torch_info}")
  list(GET _torch_info 0 _torch_root)
  list(GET _torch_info 1 Torch_VERSION)
  list(GET _torch_info 2 _torch_abi)
  add_library(dsocr_libtorch_cpu INTERFACE)
  target_include_directories(dsocr_libtorch_cpu SYSTEM INTERFACE
      "${_torch_root}/include" "${_torch_root}/include/torch/csrc/api/include")
  target_link_libraries(dsocr_libtorch_cpu INTERFACE
      "${_torch_root}/lib/libtorch.so" "${_torch_root}/lib/libtorch_cpu.so"
      "${_torch_root}/lib/libc10.so")
  target_compile_definitions(dsocr_libtorch_cpu INTERFACE _GLIBCXX_USE_CXX11_ABI=${_torch_abi})
  set(TORCH_LIBRARIES dsocr_libtorch_cpu)
  set(Torch_FOUND TRUE)
  message(STATUS "libtorch ${Torch_VERSION} (CPU part of the CUDA wheel; no CUDA toolkit here) "
                 "from ${_torch_root}")
else()
  list(APPEND CMAKE_PREFIX_PATH "${DSOCR_TORCH_PREFIX}")
  find_package(Torch REQUIRED)
  message(STATUS "libtorch ${Torch_VERSION} from ${DSOCR_TORCH_PREFIX} (wheel CUDA: "
                 "'${DSOCR_TORCH_CUDA_VERSION}', DSOCR_CUDA=${DSOCR_CUDA})")
endif()

# OpenMP for our own CPU kernels: at::parallel_for is an inline header function that splits work
# over threads only where the including file is compiled with OpenMP; without it each kernel ran
# on one thread. Its GOMP calls must bind to the runtime libtorch itself loads (the wheel's own
# libgomp.so.1), so that torch and our kernels share one thread pool instead of fighting over the
# cores with two.
find_package(OpenMP REQUIRED COMPONENTS CXX)
get_filename_component(_torch_lib_dir "${DSOCR_TORCH_PREFIX}/../../lib" ABSOLUTE)
add_library(dsocr_openmp INTERFACE)
target_compile_options(dsocr_openmp INTERFACE ${OpenMP_CXX_FLAGS})
if(EXISTS "${_torch_lib_dir}/libgomp.so.1")
  target_link_libraries(dsocr_openmp INTERFACE "${_torch_lib_dir}/libgomp.so.1")
else()
  message(WARNING "No libgomp.so.1 in ${_torch_lib_dir}: the CPU kernels use the system OpenMP "
                  "runtime, a second thread pool beside torch's")
  target_link_libraries(dsocr_openmp INTERFACE OpenMP::OpenMP_CXX)
endif()

# The torch wheel's libtorch.so exports copies of libstdc++ functions it linked statically
# (std::filesystem, std::chrono::tzdb, ... from a newer GCC). Whichever library comes first in a
# program's DT_NEEDED list wins symbol lookup, and with libtorch first std::filesystem::remove_all
# jumps to a null address (measured: SIGSEGV in a plain call). Putting the system libstdc++ first
# in every link makes the system's definitions win; torch keeps the ones only it has.
add_link_options("LINKER:--push-state,--no-as-needed" -lstdc++ "LINKER:--pop-state")
