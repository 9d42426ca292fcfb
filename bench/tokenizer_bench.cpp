// Encode throughput of dsocr's tokenizer, one thread: reads documents (JSON Lines of strings),
// encodes all of them `--repeat` times, and prints one JSON object with the best pass.
//   tokenizer_bench --tokenizer tokenizer.json --docs docs.jsonl [--repeat 3]
// bench/tokenizer_bench.py runs it side by side with the `tokenizers` library.
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/flags.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  using namespace dsocr;
  std::string tokenizer_path, docs_path;
  int64_t repeat = 3;
  FlagSet flags("tokenizer_bench", "Single-thread encode throughput.");
  flags.add_string("tokenizer", &tokenizer_path, "tokenizer.json");
  flags.add_string("docs", &docs_path, "JSON Lines file, one string per line");
  flags.add_int("repeat", &repeat, "passes over the documents (the best is reported)");
  if (Status s = flags.parse(argc, argv); !s.ok() || tokenizer_path.empty() || docs_path.empty()) {
    std::cerr << (s.ok() ? std::string("--tokenizer and --docs are required") : s.message()) << "\n"
              << flags.usage();
    return 2;
  }
  auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
  if (!tok.ok()) {
    std::cerr << tok.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> docs;
  size_t bytes = 0;
  std::ifstream in(docs_path);
  for (std::string line; std::getline(in, line);) {
    docs.push_back(nlohmann::json::parse(line).get<std::string>());
    bytes += docs.back().size();
  }
  double best = 1e30;
  size_t tokens = 0;
  for (int64_t r = 0; r < repeat; ++r) {
    tokens = 0;
    auto start = std::chrono::steady_clock::now();
    for (const auto& d : docs) tokens += (*tok)->encode(d).size();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::cout << nlohmann::json{{"docs", docs.size()},
                              {"bytes", bytes},
                              {"tokens", tokens},
                              {"seconds", best},
                              {"mb_per_s", bytes / best / 1e6}}
                   .dump()
            << "\n";
  return 0;
}
