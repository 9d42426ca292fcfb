#include "common/flags.h"

#include <catch2/catch.hpp>
#include <cstdlib>

namespace dsocr {
namespace {

struct Parsed {
  std::string model = "deepseek-ai/DeepSeek-OCR-2";
  int64_t port = 8000;
  double util = 0.9;
  bool verbose = false;
  bool ngram = true;
  std::vector<std::string> images;
  FlagSet flags{"prog", "summary"};
  Parsed() {
    flags.add_string("model", &model, "model");
    flags.add_int("port", &port, "port", "DSOCR_TEST_PORT");
    flags.add_double("util", &util, "utilisation");
    flags.add_bool("verbose", &verbose, "verbose");
    flags.add_bool("ngram", &ngram, "ngram");
    flags.add_repeated("image", &images, "image file");
  }
  Status parse(std::vector<const char*> args) {
    args.insert(args.begin(), "prog");
    return flags.parse(static_cast<int>(args.size()), args.data());
  }
};

TEST_CASE("Flags: forms of values", "[flags]") {
  Parsed p;
  REQUIRE(p.parse({"--model", "demo", "--port=9000", "--util", "0.5", "--verbose", "--no-ngram",
                   "--image", "a.png", "--image=b.png", "pos1", "--", "--pos2"})
              .ok());
  CHECK(p.model == "demo");
  CHECK(p.port == 9000);
  CHECK(p.util == 0.5);
  CHECK(p.verbose);
  CHECK_FALSE(p.ngram);
  CHECK(p.images == std::vector<std::string>{"a.png", "b.png"});
  CHECK(p.flags.positionals() == std::vector<std::string>{"pos1", "--pos2"});
}

TEST_CASE("Flags: errors name the flag", "[flags]") {
  CHECK(Parsed().parse({"--prot", "1"}).message().find("unknown flag --prot") != std::string::npos);
  CHECK(Parsed().parse({"--port", "eighty"}).message().find("--port") != std::string::npos);
  CHECK(Parsed().parse({"--port", "80x"}).code() == StatusCode::kInvalidArgument);
  CHECK(Parsed().parse({"--port"}).message() == "flag --port needs a value");
  CHECK(Parsed().parse({"--verbose=maybe"}).code() == StatusCode::kInvalidArgument);
  CHECK(Parsed().parse({"--port", "1", "--port", "2"}).message().find("more than once") !=
        std::string::npos);
  CHECK(Parsed().parse({"--util", "nan"}).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("Flags: environment fallback, command line wins", "[flags]") {
  setenv("DSOCR_TEST_PORT", "7000", 1);
  Parsed from_env;
  REQUIRE(from_env.parse({}).ok());
  CHECK(from_env.port == 7000);
  Parsed from_cli;
  REQUIRE(from_cli.parse({"--port", "7001"}).ok());
  CHECK(from_cli.port == 7001);
  setenv("DSOCR_TEST_PORT", "junk", 1);
  Parsed bad_env;
  CHECK(bad_env.parse({}).message().find("DSOCR_TEST_PORT") != std::string::npos);
  unsetenv("DSOCR_TEST_PORT");
}

TEST_CASE("Flags: help and usage", "[flags]") {
  Parsed p;
  REQUIRE(p.parse({"--help"}).ok());
  CHECK(p.flags.help_requested());
  std::string usage = p.flags.usage();
  CHECK(usage.find("--port VALUE") != std::string::npos);
  CHECK(usage.find("(default: 8000)") != std::string::npos);
  CHECK(usage.find("[env DSOCR_TEST_PORT]") != std::string::npos);
  CHECK(usage.find("--verbose\n") != std::string::npos);
}

TEST_CASE("Flags: strict number parsing", "[flags]") {
  CHECK(parse_int64("-42").value() == -42);
  CHECK_FALSE(parse_int64("").ok());
  CHECK_FALSE(parse_int64("4 2").ok());
  CHECK_FALSE(parse_int64("99999999999999999999").ok());
  CHECK(parse_double("1e-3").value() == 0.001);
  CHECK_FALSE(parse_double("inf").ok());
  CHECK(parse_bool("on").value());
}

}  // namespace
}  // namespace dsocr
