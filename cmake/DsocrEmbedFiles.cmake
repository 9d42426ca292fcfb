# dsocr_embed_files(<target> OUTPUT <file.cpp> FUNCTION <ns::name> HEADER <h> TYPE <ns::Type>
#                   BASE_DIR <dir> FILES ...)
#
# Builds files into a binary: at build time (not configure time, so an edit to a file regenerates
# only this source) cmake/embed_files.cmake writes OUTPUT, a C++ source that includes HEADER and
# defines
#   std::span<const TYPE> FUNCTION();
# where TYPE is an aggregate {std::string_view name; std::string_view bytes;}: each file by its path
# relative to BASE_DIR, byte for byte. OUTPUT is added to <target>. No tool beyond CMake is needed.
set(DSOCR_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_files.cmake)

function(dsocr_embed_files target)
  cmake_parse_arguments(ARG "" "OUTPUT;FUNCTION;HEADER;TYPE;BASE_DIR" "FILES" ${ARGN})
  set(relative_names "")
  set(absolute_paths "")
  foreach(file IN LISTS ARG_FILES)
    get_filename_component(absolute ${file} ABSOLUTE BASE_DIR ${ARG_BASE_DIR})
    file(RELATIVE_PATH relative ${ARG_BASE_DIR} ${absolute})
    list(APPEND relative_names ${relative})
    list(APPEND absolute_paths ${absolute})
  endforeach()
  # A CMake list cannot cross the command line intact: '|' separates the names instead.
  string(REPLACE ";" "|" names_arg "${relative_names}")
  add_custom_command(
    OUTPUT ${ARG_OUTPUT}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${ARG_OUTPUT} -DFUNCTION=${ARG_FUNCTION}
            -DHEADER=${ARG_HEADER} -DTYPE=${ARG_TYPE} -DBASE_DIR=${ARG_BASE_DIR} -DNAMES=${names_arg} -P ${DSOCR_EMBED_SCRIPT}
    DEPENDS ${absolute_paths} ${DSOCR_EMBED_SCRIPT}
    COMMENT "Embedding ${relative_names} into ${ARG_FUNCTION}()"
    VERBATIM)
  target_sources(${target} PRIVATE ${ARG_OUTPUT})
endfunction()
