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
#include <string_view>

#include "base/status.hpp"

namespace keel::config {

// The compiled pattern. Errors: invalid_argument with the regex error.
result<const std::regex*> compile_pattern(const std::string& text);

// REQUIRES: compile_pattern(text) succeeded before (specs are checked at
// load); a bad text here throws std::regex_error.
const std::regex& pattern(const std::string& text);

// The form of a text that guardrail pattern rules also match (a rule
// matches when it matches the text as sent or this form), so that what
// looks the same to a person, or to the tool reading it, cannot pass a rule
// by looking different to the regex:
//   - format characters dropped: zero-width space, joiners (U+200B..U+200D),
//     word joiner (U+2060), BOM (U+FEFF), soft hyphen (U+00AD), bidi
//     controls (U+202A..U+202E, U+2066..U+2069);
//   - every Unicode space (U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
//     U+202F, U+205F, U+3000) and ASCII whitespace is a space; runs of
//     spaces are one; leading and trailing spaces are dropped;
//   - fullwidth forms (U+FF01..U+FF5E) are their ASCII characters;
//   - decimal digits of other scripts (Arabic-Indic, Extended Arabic-Indic,
//     Devanagari, Bengali, Thai, fullwidth) are ASCII digits;
//   - Cyrillic and Greek letters that look like Latin ones (а е о р с у х
//     і ј ѕ ԁ ο α ν ρ and their capitals, Κ Μ Η Τ Β ...) are those Latin
//     letters.
// Case is left to the pattern ("(?i)"). Invalid UTF-8 is kept byte for byte.
std::string normalized_text(std::string_view text);

// JSON pointer of a member or element of the value at `pointer` (RFC 6901
// escaping of '~' and '/').
std::string pointer_child(const std::string& pointer, const std::string& key);
std::string pointer_child(const std::string& pointer, std::size_t index);

}  // namespace keel::config
