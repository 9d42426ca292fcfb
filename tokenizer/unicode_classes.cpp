#include "tokenizer/unicode_classes.h"

#include <cstdio>

namespace dsocr::tokenizer {
namespace {

struct Addition {
  char category;
  char32_t first, last;
};

constexpr Addition kAdditions[] = {
#define DSOCR_UNICODE_ADDITION(category, first, last) {category, first, last},
#include "tokenizer/unicode_16_additions.inc"
#undef DSOCR_UNICODE_ADDITION
};

// The added ranges of one category as class items: \x{1C89}-\x{1C8A}...
std::string ranges_of(char category) {
  std::string out;
  char buf[40];
  for (const auto& a : kAdditions) {
    if (a.category != category) continue;
    if (a.first == a.last) {
      std::snprintf(buf, sizeof(buf), "\\x{%X}", static_cast<unsigned>(a.first));
    } else {
      std::snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", static_cast<unsigned>(a.first),
                    static_cast<unsigned>(a.last));
    }
    out += buf;
  }
  return out;
}

// Recognises \p{X}, \P{X} and \p{^X} for X in L, M, N, P, S at pattern[i]; sets the category,
// whether it is negated, and the length of the escape.
bool parse_property(std::string_view p, size_t i, char* category, bool* negated, size_t* len) {
  if (i + 4 >= p.size() + 0 || p[i] != '\\' || (p[i + 1] != 'p' && p[i + 1] != 'P') ||
      p[i + 2] != '{') {
    return false;
  }
  size_t j = i + 3;
  *negated = p[i + 1] == 'P';
  if (j < p.size() && p[j] == '^') *negated = !*negated, ++j;
  if (j + 1 >= p.size() || p[j + 1] != '}') return false;
  char c = p[j];
  if (c != 'L' && c != 'M' && c != 'N' && c != 'P' && c != 'S') return false;
  *category = c;
  *len = j + 2 - i;
  return true;
}

}  // namespace

std::string upgrade_unicode_classes(std::string_view p) {
  std::string out;
  out.reserve(p.size() * 2);
  int depth = 0;  // bracket nesting: Oniguruma classes nest
  for (size_t i = 0; i < p.size();) {
    char category;
    bool negated;
    size_t len;
    if (parse_property(p, i, &category, &negated, &len)) {
      std::string original(p.substr(i, len));
      std::string positive = std::string("\\p{") + category + "}";
      std::string extra = ranges_of(category);
      if (depth == 0) {
        out += (negated ? "[^" : "[") + positive + extra + "]";
      } else if (!negated) {
        out += positive + extra;
      } else {
        out += "[" + original + "&&[^" + extra + "]]";
      }
      i += len;
      continue;
    }
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {  // any other escape: copy it whole
      out += p.substr(i, 2);
      i += 2;
      continue;
    }
    if (c == '[') {
      ++depth;
      out += c;
      ++i;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i < p.size() && p[i] == '^') out += p[i++];
      if (i < p.size() && p[i] == ']') out += p[i++];
      continue;
    }
    if (c == ']' && depth > 0) --depth;
    out += c;
    ++i;
  }
  return out;
}

}  // namespace dsocr::tokenizer
