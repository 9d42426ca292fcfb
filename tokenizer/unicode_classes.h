// Makes a tokenizer regex classify characters with the Unicode version of the reference.
//
// Hugging Face `tokenizers` matches \p{L}, \p{M}, \p{N}, \p{P} and \p{S} with Unicode 16.0 tables;
// Debian 12's Oniguruma has Unicode 14.0 tables, so 10,294 code points assigned since (new CJK
// ideographs, scripts, symbols) would fall into different pre-token splits.
// upgrade_unicode_classes() adds the code points these categories gained between 14.0 and 16.0
// (unicode_16_additions.inc) to every such class in a pattern:
//   \p{L}            -> [\p{L}<added ranges>]
//   [...\p{L}...]    -> [...\p{L}<added ranges>...]
//   \P{L}, \p{^L}    -> [^\p{L}<added ranges>]      (inside brackets: [\P{L}&&[^<ranges>]])
// Only the five one-letter categories these tokenizers use are upgraded; anything else is kept.
//
// Thread-safety: pure function.
#pragma once

#include <string>
#include <string_view>

namespace dsocr::tokenizer {

std::string upgrade_unicode_classes(std::string_view pattern);

}  // namespace dsocr::tokenizer
