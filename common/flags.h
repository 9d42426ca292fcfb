// FlagSet: the command-line parser shared by dsocr-server and every `dsocr` subcommand.
//
//   FlagSet flags("dsocr-server", "OpenAI-compatible DeepSeek-OCR-2 server");
//   flags.add_string("model", &config.model, "model id, local directory or 'demo'");
//   flags.add_int("port", &config.port, "port to listen on", "DSOCR_PORT");
//   Status s = flags.parse(argc, argv);   // --port 8000, --port=8000, --no-x for bools
//   if (flags.help_requested()) { std::cout << flags.usage(); return 0; }
//
// Each flag writes into a variable the caller owns; its initial value is the default and is shown
// in usage(). A flag may name an environment variable that supplies its value when the flag is
// absent from the command line (command line wins). Unknown flags, missing values and values of
// the wrong type are kInvalidArgument errors that name the flag.
//
// Thread-safety: none needed; use from one thread at start-up.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dsocr {

class FlagSet {
 public:
  FlagSet(std::string program, std::string summary);

  void add_string(std::string name, std::string* value, std::string help, std::string env = "");
  void add_int(std::string name, int64_t* value, std::string help, std::string env = "");
  void add_double(std::string name, double* value, std::string help, std::string env = "");
  // --name sets true, --no-name or --name=false sets false.
  void add_bool(std::string name, bool* value, std::string help, std::string env = "");
  // A flag that may be given several times; each occurrence appends.
  void add_repeated(std::string name, std::vector<std::string>* values, std::string help);

  // Parses argv[first_arg..argc). Arguments that do not start with "--" are collected as
  // positionals; "--" ends flag parsing. Environment fallbacks are applied after the command line.
  Status parse(int argc, const char* const* argv, int first_arg = 1);

  bool help_requested() const { return help_requested_; }
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string env;
    std::string default_text;
    bool is_bool = false;
    bool is_repeated = false;
    bool seen = false;
    std::function<Status(std::string_view)> set;
  };
  Flag* find(std::string_view name);
  void add(Flag flag);

  std::string program_;
  std::string summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> positionals_;
  bool help_requested_ = false;
};

// Strict number parsing shared with config readers: the whole text must be the number.
StatusOr<int64_t> parse_int64(std::string_view text);
StatusOr<double> parse_double(std::string_view text);
StatusOr<bool> parse_bool(std::string_view text);
// kOutOfRange naming the flag ("--name must be in lo..hi, got v") unless lo <= v <= hi.
Status check_flag_range(const char* flag, int64_t v, int64_t lo, int64_t hi);

}  // namespace dsocr
