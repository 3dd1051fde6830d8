#include "config/secret_refs.hpp"

#include <algorithm>

namespace keel::config {

namespace {

constexpr std::string_view ref_open = "${secret:";
constexpr std::string_view escaped_open = "$${";

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// One pass over `text`: `literal` gets the text between references (an
// escape already turned into "${"), `reference` each name. A reference
// that is not closed, or whose name is bad, stops the pass with the error.
template <class Literal, class Reference>
status scan(std::string_view text, Literal&& literal, Reference&& reference) {
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t dollar = text.find('$', i);
    if (dollar == std::string_view::npos) {
      literal(text.substr(i));
      break;
    }
    literal(text.substr(i, dollar - i));
    std::string_view rest = text.substr(dollar);
    if (rest.starts_with(escaped_open)) {
      literal("${");
      i = dollar + escaped_open.size();
    } else if (rest.starts_with(ref_open)) {
      const std::size_t from = dollar + ref_open.size();
      const std::size_t close = text.find('}', from);
      if (close == std::string_view::npos)
        return error(code::invalid_argument,
                     "\"${secret:\" has no closing \"}\" (write a literal \"${\" as \"$${\")");
      const std::string_view name = text.substr(from, close - from);
      KEEL_TRY(check_secret_name(name));
      KEEL_TRY(reference(name));
      i = close + 1;
    } else {
      literal("$");
      i = dollar + 1;
    }
  }
  return status::ok();
}

}  // namespace

bool is_secret_name(std::string_view name) {
  return !name.empty() && name.size() <= max_secret_name &&
         std::all_of(name.begin(), name.end(), is_name_char);
}

status check_secret_name(std::string_view name) {
  if (is_secret_name(name)) return status::ok();
  // The name as given, cut: it may be a value pasted by mistake.
  std::string shown(name.substr(0, 32));
  if (name.size() > 32) shown += "...";
  return error(code::invalid_argument, "secret name \"" + shown + "\" must be 1 to " +
                                           std::to_string(max_secret_name) + " of [A-Za-z0-9_.-]");
}

result<std::vector<std::string>> secret_references(std::string_view text) {
  std::vector<std::string> names;
  KEEL_TRY(scan(
      text, [](std::string_view) {},
      [&](std::string_view name) {
        names.emplace_back(name);
        return status::ok();
      }));
  return names;
}

bool needs_expansion(std::string_view text) {
  return text.find(ref_open) != std::string_view::npos ||
         text.find(escaped_open) != std::string_view::npos;
}

result<std::string> expand_secrets(std::string_view text, const secret_lookup& lookup) {
  std::string out;
  out.reserve(text.size());
  KEEL_TRY(scan(
      text, [&](std::string_view s) { out += s; },
      [&](std::string_view name) -> status {
        const std::string* value = lookup(name);
        if (!value)
          return error(code::not_found,
                       "secret \"" + std::string(name) + "\" is not set on this node");
        out += *value;
        return status::ok();
      }));
  return out;
}

}  // namespace keel::config
