// The no-repeat n-gram ban against the spec §10.2 pseudocode run in Python on 400 random token
// streams (tests/data/ngram_golden.json, from tests/tools/gen_ngram_golden.py), plus SamplingParams
// validation.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/core/sampling_params.h"
#include "engine/core/token_rules.h"

using namespace dsocr::engine;

TEST_CASE("ngram_banned_tokens matches the Python reference", "[sampler]") {
  std::ifstream in(std::string(DSOCR_TEST_SOURCE_DIR) + "/tests/data/ngram_golden.json");
  REQUIRE(in);
  nlohmann::json golden = nlohmann::json::parse(in);
  const auto whitelist = golden["whitelist"].get<std::vector<int32_t>>();
  int nonempty = 0;
  for (const auto& c : golden["cases"]) {
    const auto tokens = c["tokens"].get<std::vector<int32_t>>();
    const auto want = c["banned"].get<std::vector<int32_t>>();
    INFO("n=" << c["n"] << " window=" << c["window"] << " len=" << tokens.size());
    CHECK(ngram_banned_tokens(tokens, c["n"].get<int64_t>(), c["window"].get<int64_t>(),
                              whitelist) == want);
    nonempty += !want.empty();
  }
  CHECK(nonempty > 100);  // the corpus exercises real bans
}

TEST_CASE("SamplingParams::validate names the bad field", "[sampler]") {
  SamplingParams p;
  CHECK(p.validate().ok());
  p.top_p = 0;
  CHECK(p.validate().message().find("top_p") != std::string::npos);
  p = {};
  p.temperature = -1;
  CHECK(p.validate().message().find("temperature") != std::string::npos);
  p = {};
  p.ngram_window = 5;
  CHECK(p.validate().message().find("ngram_window") != std::string::npos);
}
