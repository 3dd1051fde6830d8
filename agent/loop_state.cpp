// The control state's JSON: every key in the order-independent layout the
// loop wrote when it kept this state as JSON, and no other. Decoding is
// strict (a field of the wrong type or one this layout does not know is
// corruption), because an encoding that dropped it could not give the
// stored bytes back.

#include "agent/loop_state.hpp"

#include <array>
#include <utility>

namespace keel::agent {

namespace {

constexpr std::array<std::pair<wait_on, std::string_view>, 9> wait_names{{
    {wait_on::model, "model"},
    {wait_on::tool, "tool"},
    {wait_on::worker, "worker"},
    {wait_on::sleep, "sleep"},
    {wait_on::human, "human"},
    {wait_on::approval, "approval"},
    {wait_on::in_doubt, "in_doubt"},
    {wait_on::retry, "retry"},
    {wait_on::compensation, "compensation"},
}};

constexpr std::array<std::pair<call_state, std::string_view>, 5> call_names{{
    {call_state::proposed, "proposed"},
    {call_state::refused, "refused"},
    {call_state::running, "running"},
    {call_state::done, "done"},
    {call_state::failed, "failed"},
}};

}  // namespace

std::string_view to_string(wait_on on) {
  for (const auto& [v, s] : wait_names)
    if (v == on) return s;
  return "model";  // unreachable: every enumerator is named
}

std::optional<wait_on> wait_on_from_string(std::string_view s) {
  for (const auto& [v, n] : wait_names)
    if (n == s) return v;
  return std::nullopt;
}

std::string_view to_string(call_state st) {
  for (const auto& [v, s] : call_names)
    if (v == st) return s;
  return "proposed";
}

std::optional<call_state> call_state_from_string(std::string_view s) {
  for (const auto& [v, n] : call_names)
    if (n == s) return v;
  return std::nullopt;
}

const std::string& loop_wait::tool_name() const {
  static const std::string none;
  return tool ? *tool : none;
}

// --- encode ------------------------------------------------------------------

json to_json(const loop_wait& w) {
  json j = json::object();
  j["on"] = std::string(to_string(w.on));
  if (w.effect) j["effect"] = *w.effect;
  if (w.attempt) j["attempt"] = *w.attempt;
  if (w.call_index) j["call_index"] = *w.call_index;
  if (w.call) j["call"] = *w.call;
  if (w.for_effect) j["for"] = *w.for_effect;
  if (w.timer) j["timer"] = *w.timer;
  if (w.tool) j["tool"] = *w.tool;
  if (w.kind) j["kind"] = *w.kind;
  if (w.since) j["since"] = *w.since;
  if (!w.prev.empty()) j["prev"] = to_json(w.prev.front());
  return j;
}

json to_json(const loop_usage& u) {
  json j = {{"model_calls", u.model_calls},
            {"tokens", u.tokens},
            {"tool_calls", u.tool_calls},
            {"wall_ms", u.wall_ms}};
  if (u.model_requests) j["model_requests"] = *u.model_requests;
  return j;
}

json to_json(const last_turn& l) {
  json j = {{"turn", l.turn}, {"status", l.status}};
  if (l.answer) j["answer"] = *l.answer;
  if (l.reason) j["reason"] = *l.reason;
  return j;
}

namespace {

json turn_to_json(const loop_turn& t) {
  json calls = json::array();
  for (const auto& c : t.calls)
    calls.push_back({{"id", c.id},
                     {"name", c.name},
                     {"arguments", c.arguments},
                     {"state", std::string(to_string(c.state))}});
  json done = json::array();
  for (const auto& d : t.done)
    done.push_back({{"effect", d.effect},
                    {"tool", d.tool},
                    {"compensate", d.compensate},
                    {"arguments", d.arguments},
                    {"result", d.result}});
  json j = {
      {"n", t.n},
      {"id", t.id},
      {"from", t.from},
      {"started_ms", t.started_ms},
      {"steps", t.steps},
      {"model_calls", t.model_calls},
      {"tool_calls", t.tool_calls},
      {"tokens", t.tokens},
      {"calls", std::move(calls)},
      {"next", t.next},
      {"wait", t.wait ? to_json(*t.wait) : json()},
      {"done", std::move(done)},
      {"failing",
       t.failing ? json{{"status", t.failing->status}, {"reason", t.failing->reason}} : json()},
      {"final", t.final},
      {"answer", t.answer}};
  if (t.waited_ms) j["waited_ms"] = *t.waited_ms;
  return j;
}

}  // namespace

json to_json(const loop_state& s) {
  json queue = json::array();
  for (const auto& q : s.queue) {
    json e = {{"id", q.id}, {"from", q.from}, {"input", q.input}};
    if (q.retry_of) e["retry_of"] = *q.retry_of;
    queue.push_back(std::move(e));
  }
  json j = {{"queue", std::move(queue)},
            {"turn", s.turn ? turn_to_json(*s.turn) : json()},
            {"turns", s.turns},
            {"usage", to_json(s.usage)},
            {"last", s.last ? to_json(*s.last) : json()}};
  if (s.spec_hash) j["spec_hash"] = *s.spec_hash;
  return j;
}

// --- decode ------------------------------------------------------------------

namespace {

// Reads the members of one JSON object, each at most once, and fails on any
// it was not asked for.
class fields {
 public:
  fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail("is not an object");
  }

  const json* find(const char* key) {
    auto it = j_.find(key);
    if (it == j_.end()) return nullptr;
    ++used_;
    return &*it;
  }
  const json& need(const char* key) {
    const json* v = find(key);
    if (!v) fail(std::string("has no ") + key);
    return *v;
  }
  uint64_t u64(const json& v, const char* key) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<uint64_t>();
    fail(std::string(key) + " is not a non-negative integer");
  }
  int64_t i64(const json& v, const char* key) {
    if (v.is_number_integer()) return v.get<int64_t>();
    fail(std::string(key) + " is not an integer");
  }
  std::string str(const json& v, const char* key) {
    if (!v.is_string()) fail(std::string(key) + " is not a string");
    return v.get<std::string>();
  }
  uint64_t need_u64(const char* key) { return u64(need(key), key); }
  std::string need_str(const char* key) { return str(need(key), key); }
  std::optional<uint64_t> opt_u64(const char* key) {
    const json* v = find(key);
    return v ? std::optional<uint64_t>(u64(*v, key)) : std::nullopt;
  }
  std::optional<std::string> opt_str(const char* key) {
    const json* v = find(key);
    return v ? std::optional<std::string>(str(*v, key)) : std::nullopt;
  }
  // Every member was read: none this layout does not know.
  void done() {
    if (used_ == j_.size()) return;
    std::string extra;
    for (const auto& [k, v] : j_.items()) extra += (extra.empty() ? "" : ", ") + k;
    fail("has a field this version does not know (its fields: " + extra + ")");
  }
  [[noreturn]] void fail(const std::string& why) const { throw bad_field{path_ + " " + why}; }

  struct bad_field {
    std::string message;
  };

 private:
  const json& j_;
  std::string path_;
  std::size_t used_ = 0;
};

loop_wait wait_from_json(const json& j, const std::string& path) {
  fields f(j, path);
  loop_wait w;
  const std::string on = f.need_str("on");
  auto parsed = wait_on_from_string(on);
  if (!parsed) f.fail("waits on '" + on + "', which no agent loop waits on");
  w.on = *parsed;
  w.effect = f.opt_u64("effect");
  w.attempt = f.opt_u64("attempt");
  w.call_index = f.opt_u64("call_index");
  w.call = f.opt_u64("call");
  w.for_effect = f.opt_u64("for");
  w.timer = f.opt_u64("timer");
  w.tool = f.opt_str("tool");
  w.kind = f.opt_str("kind");
  if (const json* v = f.find("since")) w.since = f.i64(*v, "since");
  if (const json* v = f.find("prev")) w.prev.push_back(wait_from_json(*v, path + ".prev"));
  f.done();
  return w;
}

loop_turn turn_from_json(const json& j) {
  fields f(j, "turn");
  loop_turn t;
  t.n = f.need_u64("n");
  t.id = f.need_str("id");
  t.from = f.need_str("from");
  t.started_ms = f.i64(f.need("started_ms"), "started_ms");
  t.steps = f.need_u64("steps");
  t.model_calls = f.need_u64("model_calls");
  t.tool_calls = f.need_u64("tool_calls");
  t.tokens = f.need_u64("tokens");
  const json& calls = f.need("calls");
  if (!calls.is_array()) f.fail("calls is not an array");
  for (const auto& c : calls) {
    fields cf(c, "turn.calls[]");
    loop_call call;
    call.id = cf.need_str("id");
    call.name = cf.need_str("name");
    call.arguments = cf.need("arguments");
    const std::string st = cf.need_str("state");
    auto parsed = call_state_from_string(st);
    if (!parsed) cf.fail("state '" + st + "' is no call state");
    call.state = *parsed;
    cf.done();
    t.calls.push_back(std::move(call));
  }
  t.next = f.need_u64("next");
  if (const json& w = f.need("wait"); !w.is_null()) t.wait = wait_from_json(w, "turn.wait");
  const json& done = f.need("done");
  if (!done.is_array()) f.fail("done is not an array");
  for (const auto& d : done) {
    fields df(d, "turn.done[]");
    t.done.push_back({df.need_u64("effect"), df.need_str("tool"), df.need_str("compensate"),
                      df.need("arguments"), df.need("result")});
    df.done();
  }
  if (const json& fl = f.need("failing"); !fl.is_null()) {
    fields ff(fl, "turn.failing");
    t.failing = turn_failing{ff.need_str("status"), ff.need_str("reason")};
    ff.done();
  }
  const json& fin = f.need("final");
  if (!fin.is_boolean()) f.fail("final is not a boolean");
  t.final = fin.get<bool>();
  t.answer = f.need("answer");
  t.waited_ms = f.opt_u64("waited_ms");
  f.done();
  return t;
}

}  // namespace

result<loop_state> loop_state_from_json(const json& ctl, std::string_view what) {
  try {
    fields f(ctl, "ctl");
    loop_state s;
    const json& queue = f.need("queue");
    if (!queue.is_array()) f.fail("queue is not an array");
    for (const auto& q : queue) {
      fields qf(q, "queue[]");
      s.queue.push_back(
          {qf.need_str("id"), qf.need_str("from"), qf.need_str("input"), qf.opt_u64("retry_of")});
      qf.done();
    }
    if (const json& t = f.need("turn"); !t.is_null()) s.turn = turn_from_json(t);
    s.turns = f.need_u64("turns");
    {
      fields uf(f.need("usage"), "usage");
      s.usage.model_calls = uf.need_u64("model_calls");
      s.usage.tokens = uf.need_u64("tokens");
      s.usage.tool_calls = uf.need_u64("tool_calls");
      s.usage.wall_ms = uf.need_u64("wall_ms");
      s.usage.model_requests = uf.opt_u64("model_requests");
      uf.done();
    }
    if (const json& l = f.need("last"); !l.is_null()) {
      fields lf(l, "last");
      last_turn last;
      last.turn = lf.need_u64("turn");
      last.status = lf.need_str("status");
      if (const json* a = lf.find("answer")) last.answer = *a;
      if (const json* r = lf.find("reason")) last.reason = *r;
      lf.done();
      s.last = std::move(last);
    }
    s.spec_hash = f.opt_str("spec_hash");
    f.done();
    return s;
  } catch (const fields::bad_field& e) {
    return error(code::corruption,
                 "corrupt agent loop state (" + std::string(what) + "): " + e.message);
  }
}

}  // namespace keel::agent
