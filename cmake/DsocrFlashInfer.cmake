# DsocrFlashInfer: FlashInfer's header-only attention kernels, instantiated ahead of time for our
# one configuration (engine/kernels/flashinfer_attention.cu). No JIT, no Python at run time: only
# the build reads the headers.
#
# Where the headers come from: the flashinfer-python wheel installed into the project virtualenv
# without its dependencies (they are the JIT's, which we do not use):
#   .venv/bin/pip install --no-deps flashinfer-python==0.7.2.post1
# puts them under site-packages/flashinfer/data/:
#   include/  FlashInfer's headers (flashinfer/attention/decode.cuh, prefill.cuh, ...)
#   cccl/     the CCCL FlashInfer is written against (3.6 for 0.7.2.post1). It must be searched
#             ahead of the toolkit's own copy: nvcc 13.0 ships CCCL 3.0, with which fastdiv.cuh
#             does not compile.
#
# Cache variables:
#   DSOCR_FLASHINFER_INCLUDE_DIR         the folder holding flashinfer/ (default: the wheel's)
#   DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS   CCCL include folders, searched before the toolkit's
#                                        (default: the wheel's cub, libcudacxx/include, thrust)
#   DSOCR_CUDA_ARCHS                     SM versions to build the kernels for, e.g. "80;89;90"
#                                        (8.0 or newer: bf16 tensor cores). torch's
#                                        TORCH_CUDA_ARCH_LIST adds its own -gencode flags to every
#                                        CUDA target as well (9.0 here); duplicates are harmless.
#
# Defines the static library dsocr_flashinfer (PUBLIC header engine/kernels/flashinfer_attention.h,
# torch-free and CUDA-free). Only when DSOCR_CUDA is ON; include() after DsocrDependencies.

if(NOT DSOCR_CUDA)
  return()
endif()

set(DSOCR_CUDA_ARCHS "90" CACHE STRING "SM versions of the FlashInfer kernels (e.g. 80;89;90)")

# The wheel's data folder, asked of the venv's Python without importing the package (importing
# flashinfer would pull in its JIT machinery; find_spec only locates it).
set(_fi_data_dir "")
if(EXISTS "${DSOCR_PYTHON}")
  execute_process(
    COMMAND "${DSOCR_PYTHON}" -c
            "import importlib.util, os; s = importlib.util.find_spec('flashinfer'); print(os.path.join(list(s.submodule_search_locations)[0], 'data') if s else '')"
    OUTPUT_VARIABLE _fi_data_dir OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _fi_rc ERROR_QUIET)
  if(NOT _fi_rc EQUAL 0)
    set(_fi_data_dir "")
  endif()
endif()

if(_fi_data_dir)
  set(_fi_default_include "${_fi_data_dir}/include")
  set(_fi_default_cccl "${_fi_data_dir}/cccl/cub;${_fi_data_dir}/cccl/libcudacxx/include;${_fi_data_dir}/cccl/thrust")
else()
  set(_fi_default_include "")
  set(_fi_default_cccl "")
endif()
set(DSOCR_FLASHINFER_INCLUDE_DIR "${_fi_default_include}" CACHE PATH
    "Folder holding FlashInfer's flashinfer/ headers (default: the venv's flashinfer-python wheel)")
set(DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS "${_fi_default_cccl}" CACHE STRING
    "CCCL include folders for FlashInfer, searched before the CUDA toolkit's")
# An empty cache entry left by a configure without the wheel: fill it now that the wheel is there.
if(NOT DSOCR_FLASHINFER_INCLUDE_DIR AND _fi_default_include)
  set_property(CACHE DSOCR_FLASHINFER_INCLUDE_DIR PROPERTY VALUE "${_fi_default_include}")
endif()
if(NOT DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS AND _fi_default_cccl)
  set_property(CACHE DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS PROPERTY VALUE "${_fi_default_cccl}")
endif()

set(_fi_install_hint
    "Install the headers with\n  ${DSOCR_PYTHON} -m pip install --no-deps flashinfer-python==0.7.2.post1\n"
    "or point -DDSOCR_FLASHINFER_INCLUDE_DIR=<dir with flashinfer/> and "
    "-DDSOCR_FLASHINFER_CCCL_INCLUDE_DIRS=<the copy's cccl/cub, cccl/libcudacxx/include and "
    "cccl/thrust, as a CMake list> at a copy, "
    "or configure with -DDSOCR_CUDA=OFF.")
foreach(_header flashinfer/attention/decode.cuh flashinfer/attention/prefill.cuh
                flashinfer/attention/scheduler.cuh flashinfer/page.cuh)
  if(NOT DSOCR_FLASHINFER_INCLUDE_DIR OR NOT EXISTS "${DSOCR_FLASHINFER_INCLUDE_DIR}/${_header}")
    message(FATAL_ERROR "FlashInfer header ${_header} not found (DSOCR_FLASHINFER_INCLUDE_DIR="
                        "'${DSOCR_FLASHINFER_INCLUDE_DIR}'). " ${_fi_install_hint})
  endif()
endforeach()
set(_fi_cccl_found FALSE)
foreach(_dir IN LISTS DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS)
  if(EXISTS "${_dir}/cuda/std/__cccl/version.h")
    set(_fi_cccl_found TRUE)
    file(STRINGS "${_dir}/cuda/std/__cccl/version.h" _fi_cccl_version
         REGEX "^#define CCCL_VERSION [0-9]+")
    string(REGEX REPLACE "^#define CCCL_VERSION ([0-9]+).*" "\\1" _fi_v "${_fi_cccl_version}")
    math(EXPR _fi_major "${_fi_v} / 1000000")
    math(EXPR _fi_minor "(${_fi_v} / 1000) % 1000")
    math(EXPR _fi_patch "${_fi_v} % 1000")
    set(_fi_cccl_version "CCCL ${_fi_major}.${_fi_minor}.${_fi_patch}")
  endif()
endforeach()
if(NOT _fi_cccl_found)
  message(FATAL_ERROR "No CCCL headers (cuda/std/__cccl/version.h) in "
                      "DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS='${DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS}'. "
                      "FlashInfer needs a CCCL newer than CUDA 13.0's. " ${_fi_install_hint})
endif()

set(_fi_gencode "")
foreach(_arch IN LISTS DSOCR_CUDA_ARCHS)
  if(NOT _arch MATCHES "^[0-9]+[af]?$" OR _arch LESS 80)
    message(FATAL_ERROR "DSOCR_CUDA_ARCHS: '${_arch}' is not an SM version of 80 or newer "
                        "(FlashInfer's bf16 prefill needs sm_80+); e.g. \"80;89;90\"")
  endif()
  list(APPEND _fi_gencode "SHELL:-gencode arch=compute_${_arch},code=sm_${_arch}")
endforeach()

add_library(dsocr_flashinfer STATIC ${CMAKE_SOURCE_DIR}/engine/kernels/flashinfer_attention.cu)
# -I for CCCL (ahead of the toolkit's, which nvcc adds after every user folder), -isystem for
# FlashInfer (its own warnings are not ours to fix).
target_include_directories(dsocr_flashinfer BEFORE PRIVATE ${DSOCR_FLASHINFER_CCCL_INCLUDE_DIRS})
target_include_directories(dsocr_flashinfer SYSTEM PRIVATE ${DSOCR_FLASHINFER_INCLUDE_DIR})
target_include_directories(dsocr_flashinfer PUBLIC $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}>)
set_target_properties(dsocr_flashinfer PROPERTIES CUDA_ARCHITECTURES OFF
                                                  CUDA_SEPARABLE_COMPILATION OFF
                                                  CUDA_STANDARD 17
                                                  CUDA_STANDARD_REQUIRED ON)
target_compile_options(dsocr_flashinfer PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -O3 ${_fi_gencode}>)
target_link_libraries(dsocr_flashinfer PUBLIC dsocr_common CUDA::cudart)

list(JOIN DSOCR_CUDA_ARCHS "," _fi_archs)
message(STATUS "FlashInfer headers: ${DSOCR_FLASHINFER_INCLUDE_DIR} (${_fi_cccl_version}; "
               "sm ${_fi_archs})")
