#pragma once
// Callbacks that must run at most once: a request's acknowledgement, a
// waiter's answer. call_once(f, v) calls `f` if it is still set and clears
// it first, so a second call (a late reply, a retry) is a no-op.

#include <utility>

namespace keel {

template <class F, class T>
void call_once(F& f, T&& value) {
  if (!f) return;
  F g = std::move(f);
  f = nullptr;
  g(std::forward<T>(value));
}

}  // namespace keel
