#pragma once
// Regular expressions written in specs: schema `pattern`s and guardrail
// rules. ECMAScript syntax; a leading "(?i)" (not ECMAScript) makes one
// case-insensitive. libstdc++'s default matcher recurses once per input
// character, so a quantified pattern over a ~10 KB argument (which a model
// can send) would overflow the stack; patterns run in its polynomial mode,
// which walks the automaton breadth-first with a stack bounded by the
// pattern, and refuses back-references when compiling.
//
// Thread-safe. Each distinct text is compiled once and kept for the life of
// the process (texts come only from loaded specs, so the set stays small);
// returned references stay valid.

#include <regex>
#include <string>

#include "base/status.hpp"

namespace keel::config {

// The compiled pattern. Errors: invalid_argument with the regex error.
result<const std::regex*> compile_pattern(const std::string& text);

// REQUIRES: compile_pattern(text) succeeded before (specs are checked at
// load); a bad text here throws std::regex_error.
const std::regex& pattern(const std::string& text);

// JSON pointer of a member or element of the value at `pointer` (RFC 6901
// escaping of '~' and '/').
std::string pointer_child(const std::string& pointer, const std::string& key);
std::string pointer_child(const std::string& pointer, std::size_t index);

}  // namespace keel::config
