#include "config/patterns.hpp"

#include <map>
#include <memory>
#include <mutex>

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

}  // namespace keel::config
