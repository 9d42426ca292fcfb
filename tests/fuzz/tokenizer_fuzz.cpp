// libFuzzer target: the DeepSeek-OCR-2 tokenizer (loaded once from tokenizer.json, whose path
// scripts/fuzz.sh passes in DSOCR_FUZZ_TOKENIZER_JSON) on arbitrary input. The first byte picks
// the operation:
//   even: encode the rest as text (with and without special tokens); every id must be in the
//         vocabulary, and decoding them must give back a string (no crash on any input);
//   odd:  read the rest as 24-bit ids (reduced into the vocabulary), decode them, and check the
//         streaming decoder's documented invariant: its deltas concatenate to decode().
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"

namespace {
std::shared_ptr<const dsocr::tokenizer::Tokenizer> tokenizer;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* path = std::getenv("DSOCR_FUZZ_TOKENIZER_JSON");
  if (!path) {
    std::fprintf(stderr, "tokenizer_fuzz: set DSOCR_FUZZ_TOKENIZER_JSON to a tokenizer.json\n");
    std::abort();
  }
  auto loaded = dsocr::tokenizer::Tokenizer::from_file(path);
  if (!loaded.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", loaded.status().message().c_str());
    std::abort();
  }
  tokenizer = *loaded;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t op = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const int32_t vocab = tokenizer->vocab_size();
  const bool skip_special = (op & 2) != 0;
  if ((op & 1) == 0) {
    for (bool add_special : {false, true}) {
      std::vector<int32_t> ids = tokenizer->encode(rest, add_special);
      for (int32_t id : ids)
        if (id < 0 || id >= vocab) __builtin_trap();
      (void)tokenizer->decode(ids, skip_special);
    }
    return 0;
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 2 < rest.size(); i += 3) {
    uint32_t raw = static_cast<uint8_t>(rest[i]) | static_cast<uint8_t>(rest[i + 1]) << 8 |
                   static_cast<uint8_t>(rest[i + 2]) << 16;
    // With bit 2 of the operation: ids near the top of the vocabulary, where the added and
    // special tokens live.
    ids.push_back(static_cast<int32_t>((op & 4) ? vocab - 1 - raw % 1024 : raw % vocab));
  }
  const std::string whole = tokenizer->decode(ids, skip_special);
  dsocr::tokenizer::IncrementalDecoder stream(tokenizer, skip_special);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  if (streamed != whole) __builtin_trap();
  return 0;
}
