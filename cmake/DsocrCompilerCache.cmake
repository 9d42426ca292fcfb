# ccache for every compiler when it is installed. Precompiled headers only hit the cache with
# these sloppiness settings (the PCH embeds mtimes and __DATE__-like state). CCACHE_BASEDIR makes
# paths relative, so that clones and worktrees in other directories share one cache.
find_program(DSOCR_CCACHE ccache)
if(DSOCR_CCACHE)
  set(_launcher ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}"
      ${DSOCR_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_launcher})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${_launcher})
  message(STATUS "ccache: ${DSOCR_CCACHE}")
endif()
