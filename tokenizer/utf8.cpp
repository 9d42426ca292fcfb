#include "tokenizer/utf8.h"

namespace dsocr::tokenizer {

size_t valid_sequence_length(std::string_view s, size_t pos, bool* incomplete) {
  if (incomplete) *incomplete = false;
  const auto b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return 1;
  size_t need;
  uint8_t lower = 0x80, upper = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lower = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, upper = 0x9F;  // no surrogates
  } else if (b == 0xF0) {
    need = 3, lower = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, upper = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // a continuation byte or a byte that never starts a sequence
  }
  for (size_t k = 1; k <= need; ++k) {
    if (pos + k >= s.size()) {
      if (incomplete) *incomplete = true;
      return 0;
    }
    const auto c = static_cast<uint8_t>(s[pos + k]);
    const uint8_t lo = k == 1 ? lower : 0x80, hi = k == 1 ? upper : 0xBF;
    if (c < lo || c > hi) return 0;
  }
  return need + 1;
}

char32_t decode_code_point(std::string_view s, size_t pos, size_t len) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data() + pos);
  switch (len) {
    case 1:
      return p[0];
    case 2:
      return ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    case 3:
      return ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    default:
      return ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) |
             (p[3] & 0x3Fu);
  }
}

void append_utf8(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t invalid_subpart_length(std::string_view s, size_t pos) {
  // The lead byte plus the continuation bytes that were still valid for it.
  size_t j = pos + 1;
  const auto b = static_cast<uint8_t>(s[pos]);
  if (b >= 0xC2 && b <= 0xF4) {
    uint8_t lower = (b == 0xE0) ? 0xA0 : (b == 0xF0) ? 0x90 : 0x80;
    uint8_t upper = (b == 0xED) ? 0x9F : (b == 0xF4) ? 0x8F : 0xBF;
    size_t need = b <= 0xDF ? 1 : b <= 0xEF ? 2 : 3;
    for (size_t k = 1; k <= need && j < s.size(); ++k, ++j) {
      const auto c = static_cast<uint8_t>(s[j]);
      const uint8_t lo = k == 1 ? lower : 0x80, hi = k == 1 ? upper : 0xBF;
      if (c < lo || c > hi) break;
    }
  }
  return j - pos;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t len = valid_sequence_length(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string to_valid_utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    size_t len = valid_sequence_length(s, i);
    if (len > 0) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    size_t j = i + invalid_subpart_length(s, i);
    append_utf8(&out, kReplacementChar);
    i = j;
  }
  return out;
}

bool is_unicode_whitespace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_python_whitespace(char32_t cp) {
  return is_unicode_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F);
}

size_t leading_space_length(std::string_view s, bool (*is_space)(char32_t)) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len = valid_sequence_length(s, i);
    if (len == 0 || !is_space(decode_code_point(s, i, len))) break;
    i += len;
  }
  return i;
}

size_t trailing_space_start(std::string_view s, bool (*is_space)(char32_t)) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t len = valid_sequence_length(s, start);
    if (len != end - start || !is_space(decode_code_point(s, start, len))) break;
    end = start;
  }
  return end;
}

std::string_view python_strip(std::string_view s) {
  size_t begin = leading_space_length(s, is_python_whitespace);
  if (begin == s.size()) return s.substr(begin);
  return s.substr(begin, trailing_space_start(s, is_python_whitespace) - begin);
}

}  // namespace dsocr::tokenizer
