# Small helpers so every module target is declared the same way.

# Warnings for our own code (dependencies come in as -isystem and stay quiet).
set(DSOCR_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND DSOCR_WARNINGS -Wno-restrict)  # GCC 12 false positives on std::string at -O3
endif()

# Headers precompiled once per torch-using target: the expensive part of every libtorch
# translation unit (~40 s for <torch/torch.h> on a 2-core machine) is paid once, not per file.
set(DSOCR_TORCH_PCH_HEADERS <ATen/ATen.h> <torch/nn/module.h> <torch/types.h>)

function(dsocr_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DSOCR_WARNINGS}>)
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}>)
endfunction()

# dsocr_use_torch(<target> PUBLIC|PRIVATE): link libtorch and precompile its headers.
function(dsocr_use_torch target visibility)
  target_link_libraries(${target} ${visibility} ${TORCH_LIBRARIES})
  target_precompile_headers(${target} PRIVATE ${DSOCR_TORCH_PCH_HEADERS})
endfunction()

# dsocr_add_catch_test(<name> SOURCES ... DEPS ... [LABELS ...] [TORCH])
# One Catch2 binary per module; each TEST_CASE becomes its own ctest test.
function(dsocr_add_catch_test name)
  cmake_parse_arguments(ARG "TORCH" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/catch_main.cpp ${ARG_SOURCES})
  dsocr_target_defaults(${name})
  target_link_libraries(${name} PRIVATE Catch2::Catch2 ${ARG_DEPS})
  # Where tests find tests/data and ../shared when DSOCR_SOURCE_DIR is not set (ctest sets it).
  target_compile_definitions(${name} PRIVATE DSOCR_TEST_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  if(ARG_TORCH)
    dsocr_use_torch(${name} PRIVATE)
  endif()
  set(_labels unit ${ARG_LABELS})
  catch_discover_tests(${name}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
      PROPERTIES LABELS "${_labels}" ENVIRONMENT "DSOCR_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()

# dsocr_add_pytest(<name> <path> [LABELS ...]): a pytest suite, run with the venv's Python.
function(dsocr_add_pytest name path)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 900)
  endif()
  add_test(NAME ${name}
           COMMAND ${DSOCR_PYTHON} -m pytest -q -p no:cacheprovider ${path}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES
      LABELS "pytest;${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
      ENVIRONMENT "DSOCR_BUILD_DIR=${CMAKE_BINARY_DIR};DSOCR_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()
