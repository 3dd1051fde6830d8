#include "config/patterns.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace keel::config {

namespace {

std::mutex cache_mu;
std::map<std::string, std::unique_ptr<const std::regex>, std::less<>> cache;

std::unique_ptr<const std::regex> build(const std::string& text) {
  std::string body = text;
  auto flags = std::regex::ECMAScript;
#ifdef __GLIBCXX__
  flags |= std::regex_constants::__polynomial;
#endif
  if (body.rfind("(?i)", 0) == 0) {
    body.erase(0, 4);
    flags |= std::regex::icase;
  }
  return std::make_unique<const std::regex>(body, flags);
}

}  // namespace

result<const std::regex*> compile_pattern(const std::string& text) {
  std::lock_guard lk(cache_mu);
  auto& slot = cache[text];
  if (!slot) {
    try {
      slot = build(text);
    } catch (const std::regex_error& e) {
      cache.erase(text);
      return error(code::invalid_argument,
                   std::string("is not a valid ECMAScript regex: ") + e.what());
    }
  }
  return slot.get();
}

const std::regex& pattern(const std::string& text) {
  std::lock_guard lk(cache_mu);
  auto& slot = cache[text];
  if (!slot) slot = build(text);
  return *slot;
}

std::string pointer_child(const std::string& pointer, const std::string& key) {
  std::string out = pointer + "/";
  for (char c : key) {
    if (c == '~')
      out += "~0";
    else if (c == '/')
      out += "~1";
    else
      out += c;
  }
  return out;
}

std::string pointer_child(const std::string& pointer, std::size_t index) {
  return pointer + "/" + std::to_string(index);
}

namespace {

// One code point from `s` at `i` (advancing it); nullopt on invalid UTF-8
// (then `i` moves one byte).
std::optional<char32_t> next_code_point(std::string_view s, std::size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  int extra = b < 0x80 ? 0 : (b >> 5) == 6 ? 1 : (b >> 4) == 14 ? 2 : (b >> 3) == 30 ? 3 : -1;
  if (extra < 0 || i + static_cast<std::size_t>(extra) >= s.size() + (extra == 0 ? 1 : 0)) {
    ++i;
    return std::nullopt;
  }
  char32_t cp = extra == 0 ? b : b & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    const auto c = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
    if ((c >> 6) != 2) {
      ++i;
      return std::nullopt;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  i += static_cast<std::size_t>(extra) + 1;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_format(char32_t c) {
  return (c >= 0x200B && c <= 0x200D) || c == 0x2060 || c == 0xFEFF || c == 0x00AD ||
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

bool is_space(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x00A0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Decimal digits of other scripts: the first code point of each run of ten.
constexpr char32_t digit_zeros[] = {0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0xFF10};

// Latin lookalikes among Cyrillic and Greek letters.
char32_t latin_lookalike(char32_t c) {
  switch (c) {
    // Cyrillic small
    case 0x0430:
      return 'a';
    case 0x0435:
      return 'e';
    case 0x043E:
      return 'o';
    case 0x0440:
      return 'p';
    case 0x0441:
      return 'c';
    case 0x0443:
      return 'y';
    case 0x0445:
      return 'x';
    case 0x0456:
      return 'i';
    case 0x0458:
      return 'j';
    case 0x0455:
      return 's';
    case 0x0501:
      return 'd';
    case 0x04BB:
      return 'h';
    // Cyrillic capital
    case 0x0410:
      return 'A';
    case 0x0412:
      return 'B';
    case 0x0415:
      return 'E';
    case 0x041A:
      return 'K';
    case 0x041C:
      return 'M';
    case 0x041D:
      return 'H';
    case 0x041E:
      return 'O';
    case 0x0420:
      return 'P';
    case 0x0421:
      return 'C';
    case 0x0422:
      return 'T';
    case 0x0425:
      return 'X';
    case 0x0406:
      return 'I';
    case 0x0408:
      return 'J';
    case 0x0405:
      return 'S';
    // Greek small
    case 0x03BF:
      return 'o';
    case 0x03B1:
      return 'a';
    case 0x03BD:
      return 'v';
    case 0x03C1:
      return 'p';
    case 0x03B9:
      return 'i';
    case 0x03BA:
      return 'k';
    // Greek capital
    case 0x0391:
      return 'A';
    case 0x0392:
      return 'B';
    case 0x0395:
      return 'E';
    case 0x0396:
      return 'Z';
    case 0x0397:
      return 'H';
    case 0x0399:
      return 'I';
    case 0x039A:
      return 'K';
    case 0x039C:
      return 'M';
    case 0x039D:
      return 'N';
    case 0x039F:
      return 'O';
    case 0x03A1:
      return 'P';
    case 0x03A4:
      return 'T';
    case 0x03A5:
      return 'Y';
    case 0x03A7:
      return 'X';
    default:
      return 0;
  }
}

}  // namespace

std::string normalized_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool space = false;  // a space is due before the next character
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t at = i;
    auto cp = next_code_point(text, i);
    if (!cp) {
      if (space && !out.empty()) out.push_back(' ');
      space = false;
      out.push_back(text[at]);
      continue;
    }
    char32_t c = *cp;
    if (is_format(c)) continue;
    if (is_space(c)) {
      space = true;
      continue;
    }
    if (c >= 0xFF01 && c <= 0xFF5E) c -= 0xFEE0;
    for (char32_t zero : digit_zeros)
      if (c >= zero && c <= zero + 9) c = '0' + (c - zero);
    if (char32_t l = latin_lookalike(c)) c = l;
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    append_utf8(out, c);
  }
  return out;
}

}  // namespace keel::config
