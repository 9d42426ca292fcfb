#include "common/flags.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "common/check.h"

namespace dsocr {

StatusOr<int64_t> parse_int64(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return invalid_argument("'" + std::string(text) + "' is not an integer");
  }
  return value;
}

StatusOr<double> parse_double(std::string_view text) {
  std::string copy(text);
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || errno == ERANGE ||
      !std::isfinite(value)) {
    return invalid_argument("'" + copy + "' is not a finite number");
  }
  return value;
}

StatusOr<bool> parse_bool(std::string_view text) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return false;
  return invalid_argument("'" + std::string(text) + "' is not a boolean (true/false)");
}

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void FlagSet::add(Flag flag) {
  DSOCR_CHECK(find(flag.name) == nullptr) << "flag --" << flag.name << " defined twice";
  flags_.push_back(std::move(flag));
}

FlagSet::Flag* FlagSet::find(std::string_view name) {
  for (auto& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void FlagSet::add_string(std::string name, std::string* value, std::string help, std::string env) {
  add({.name = std::move(name),
       .help = std::move(help),
       .env = std::move(env),
       .default_text = value->empty() ? "" : "\"" + *value + "\"",
       .set = [value](std::string_view v) {
         *value = std::string(v);
         return Status();
       }});
}

void FlagSet::add_int(std::string name, int64_t* value, std::string help, std::string env) {
  add({.name = std::move(name),
       .help = std::move(help),
       .env = std::move(env),
       .default_text = std::to_string(*value),
       .set = [value](std::string_view v) -> Status {
         DSOCR_ASSIGN_OR_RETURN(*value, parse_int64(v));
         return Status();
       }});
}

void FlagSet::add_double(std::string name, double* value, std::string help, std::string env) {
  std::ostringstream def;
  def << *value;
  add({.name = std::move(name),
       .help = std::move(help),
       .env = std::move(env),
       .default_text = def.str(),
       .set = [value](std::string_view v) -> Status {
         DSOCR_ASSIGN_OR_RETURN(*value, parse_double(v));
         return Status();
       }});
}

void FlagSet::add_bool(std::string name, bool* value, std::string help, std::string env) {
  add({.name = std::move(name),
       .help = std::move(help),
       .env = std::move(env),
       .default_text = *value ? "true" : "false",
       .is_bool = true,
       .set = [value](std::string_view v) -> Status {
         DSOCR_ASSIGN_OR_RETURN(*value, parse_bool(v));
         return Status();
       }});
}

void FlagSet::add_repeated(std::string name, std::vector<std::string>* values, std::string help) {
  add({.name = std::move(name),
       .help = std::move(help),
       .is_repeated = true,
       .set = [values](std::string_view v) {
         values->emplace_back(v);
         return Status();
       }});
}

Status FlagSet::parse(int argc, const char* const* argv, int first_arg) {
  bool flags_done = false;
  for (int i = first_arg; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg.substr(0, 2) != "--") {
      if (!flags_done && arg == "-h") {
        help_requested_ = true;
        continue;
      }
      positionals_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string_view body = arg.substr(2);
    if (body == "help") {
      help_requested_ = true;
      continue;
    }
    std::string_view name = body;
    std::string_view value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = find(name);
    if (flag == nullptr && !has_value && name.substr(0, 3) == "no-") {
      Flag* negated = find(name.substr(3));
      if (negated != nullptr && negated->is_bool) {
        negated->seen = true;
        DSOCR_RETURN_IF_ERROR(negated->set("false").with_context("--" + std::string(name)));
        continue;
      }
    }
    if (flag == nullptr) {
      return invalid_argument("unknown flag --" + std::string(name) + " (see " + program_ +
                              " --help)");
    }
    if (flag->seen && !flag->is_repeated) {
      return invalid_argument("flag --" + flag->name + " given more than once");
    }
    if (!has_value) {
      if (flag->is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return invalid_argument("flag --" + flag->name + " needs a value");
      }
    }
    flag->seen = true;
    DSOCR_RETURN_IF_ERROR(flag->set(value).with_context("--" + flag->name));
  }
  for (auto& flag : flags_) {
    if (flag.seen || flag.env.empty()) continue;
    const char* env_value = std::getenv(flag.env.c_str());
    if (env_value == nullptr || *env_value == '\0') continue;
    DSOCR_RETURN_IF_ERROR(flag.set(env_value).with_context("environment variable " + flag.env));
  }
  return Status();
}

std::string FlagSet::usage() const {
  std::ostringstream out;
  out << "Usage: " << program_ << " [flags]\n" << summary_ << "\n\nFlags:\n";
  for (const auto& flag : flags_) {
    out << "  --" << flag.name;
    if (!flag.is_bool) out << " VALUE";
    out << "\n      " << flag.help;
    if (!flag.default_text.empty()) out << " (default: " << flag.default_text << ")";
    if (flag.is_repeated) out << " (repeatable)";
    if (!flag.env.empty()) out << " [env " << flag.env << "]";
    out << "\n";
  }
  out << "  --help\n      print this message\n";
  return out.str();
}

Status check_flag_range(const char* flag, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return out_of_range(std::string("--") + flag + " must be in " + std::to_string(lo) + ".." +
                        std::to_string(hi) + ", got " + std::to_string(v));
  }
  return Status();
}

}  // namespace dsocr
