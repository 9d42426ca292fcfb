// The `dsocr` commands, one function each (server/cli/cli_main.cpp lists them), grouped by file:
//   info_commands.cpp     version, info
//   model_commands.cpp    download, make-model, tokenize
//   vision_commands.cpp   preprocess, encode
//   engine_commands.cpp   generate, bench
//   ocr_command.cpp       ocr (documents to markdown and boxes; ocr_*.h below it)
// Each takes main()'s arguments (argv[1] is the command's name, its flags follow) and returns the
// exit code: 0 done, 1 failed, 2 bad usage.
//
// Thread-safety: each runs on the main thread, once per process.
#pragma once

#include <optional>

#include "common/flags.h"

namespace dsocr::cli {

int cmd_version(int argc, const char* const* argv);
int cmd_info(int argc, const char* const* argv);
int cmd_download(int argc, const char* const* argv);
int cmd_make_model(int argc, const char* const* argv);
int cmd_tokenize(int argc, const char* const* argv);
int cmd_preprocess(int argc, const char* const* argv);
int cmd_encode(int argc, const char* const* argv);
int cmd_generate(int argc, const char* const* argv);
int cmd_bench(int argc, const char* const* argv);
int cmd_ocr(int argc, const char* const* argv);

// Parses a command's flags (argv[2..]). Returns the exit code when the command should stop here
// (--help: 0 after printing usage and `extra_help`; bad flags: 2 after saying why), nullopt when
// it should run.
std::optional<int> parse_command_flags(FlagSet& flags, int argc, const char* const* argv,
                                       const char* extra_help = "");

}  // namespace dsocr::cli
