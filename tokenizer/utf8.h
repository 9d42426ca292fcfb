// UTF-8 helpers shared by the tokenizer: decoding code points, the lossy conversion used for
// invalid input and for decoded bytes, and Unicode whitespace as Rust and Python define it.
//
// Lossy conversion follows the Unicode "maximal subpart" practice (the same as Rust's
// String::from_utf8_lossy and Python's bytes.decode("utf-8", "replace")): every maximal invalid
// subpart becomes one U+FFFD, valid sequences are kept.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsocr::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length of the valid UTF-8 sequence starting at s[pos], or 0 if the bytes there are not one.
// `incomplete` (optional) is set when they are a valid prefix cut off by the end of `s`.
size_t valid_sequence_length(std::string_view s, size_t pos, bool* incomplete = nullptr);

// Length of the maximal invalid subpart starting at s[pos] (precondition: no valid sequence
// starts there): the bytes one U+FFFD replaces in a lossy conversion. At least 1.
size_t invalid_subpart_length(std::string_view s, size_t pos);

// Decodes the code point at s[pos] (precondition: a valid sequence of length `len` starts there).
char32_t decode_code_point(std::string_view s, size_t pos, size_t len);

void append_utf8(std::string* out, char32_t cp);

bool is_valid_utf8(std::string_view s);

// `s` with every maximal invalid subpart replaced by U+FFFD.
std::string to_valid_utf8_lossy(std::string_view s);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_unicode_whitespace(char32_t cp);
// Python's str.isspace (White_Space plus the bidi separators U+001C..U+001F).
bool is_python_whitespace(char32_t cp);

// Byte length of the run of characters satisfying `is_space` at the start of `s`, and the offset
// where such a run ending `s` begins (s.size() when there is none). Invalid bytes end a run.
size_t leading_space_length(std::string_view s, bool (*is_space)(char32_t));
size_t trailing_space_start(std::string_view s, bool (*is_space)(char32_t));

// Python's str.strip(): leading and trailing Python whitespace removed.
std::string_view python_strip(std::string_view s);

}  // namespace dsocr::tokenizer
