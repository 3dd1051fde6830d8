#pragma once
// A predicate for tests of decoders: did it fail the way corrupt input must?

#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "base/status.hpp"

namespace keel::test {

// True when `r` failed with a corruption error whose message names the
// record (`what`) and, if given, `why`; logs what it got otherwise.
template <class T>
bool is_corruption_naming(const keel::result<T>& r, std::string_view what,
                          std::string_view why = {}) {
  if (r.is_ok()) {
    MESSAGE("expected a corruption error, got a value");
    return false;
  }
  const std::string m = r.error().message();  // error() is a temporary
  bool ok = r.error().error_code() == keel::code::corruption && m.find(what) != std::string::npos &&
            (why.empty() || m.find(why) != std::string::npos);
  if (!ok) MESSAGE("unexpected error: " << r.error().to_string());
  return ok;
}

}  // namespace keel::test
