#include "support/fake_tool_server.hpp"

#include <stdexcept>

#include "support/fake_http.hpp"

namespace keel::test {

using json = nlohmann::json;

namespace {

net::http_response error_response(unsigned status, const std::string& message) {
  return {status, "application/json", net::error_json("fake_tool_error", message), {}};
}

constexpr std::string_view tools_prefix = "/tools/";
constexpr std::string_view behaviours_prefix = "/behaviours/";

}  // namespace

tool_behaviour tool_behaviour::from_json(const json& j) {
  if (!j.is_object()) throw std::runtime_error("a tool behaviour must be a JSON object");
  tool_behaviour b;
  b.fail_first = j.value("fail_first", b.fail_first);
  b.fail_status = j.value("fail_status", b.fail_status);
  b.fail_applied = j.value("fail_applied", false);
  b.retry_after = j.value("retry_after", "");
  b.status = j.value("status", b.status);
  b.delay = std::chrono::milliseconds(j.value("delay_ms", uint64_t{0}));
  b.hold = j.value("hold", false);
  b.hold_timeout =
      std::chrono::milliseconds(j.value("hold_timeout_ms", uint64_t(b.hold_timeout.count())));
  if (auto body = j.find("body"); body != j.end()) b.body = *body;
  if (auto raw = j.find("raw_body"); raw != j.end()) b.raw_body = raw->get<std::string>();
  if (auto echo = j.find("echo_header"); echo != j.end()) b.echo_header = echo->get<std::string>();
  return b;
}

std::string tool_call_record::header(std::string_view name) const {
  return find_header(headers, name);
}

fake_tool_server::fake_tool_server(uint16_t port) {
  // Started in the body: every member the handler touches exists by now.
  server_ = open_fake_server("fake tool server", port,
                             [this](net::http_request req, net::respond_fn respond) {
                               on_request(std::move(req), std::move(respond));
                             });
}

fake_tool_server::~fake_tool_server() {
  stop();
}

void fake_tool_server::stop() {
  release();
  server_->stop();
}

uint16_t fake_tool_server::port() const {
  return server_->port();
}

std::string fake_tool_server::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port());
}

std::string fake_tool_server::url(std::string_view tool) const {
  return base_url() + std::string(tools_prefix) + std::string(tool);
}

void fake_tool_server::set_behaviour(const std::string& tool, tool_behaviour b) {
  std::lock_guard lock(mu_);
  tools_[tool].behaviour = std::move(b);
}

void fake_tool_server::release() {
  std::vector<held_call> due;
  {
    std::lock_guard lock(mu_);
    due.swap(held_);
    changed_.notify_all();
  }
  for (auto& h : due) h.respond(std::move(h.response));
}

void fake_tool_server::answer_held(uint64_t id) {
  std::optional<held_call> due;
  {
    std::lock_guard lock(mu_);
    for (auto it = held_.begin(); it != held_.end(); ++it)
      if (it->id == id) {
        due = std::move(*it);
        held_.erase(it);
        changed_.notify_all();
        break;
      }
  }
  if (due) due->respond(std::move(due->response));
}

std::size_t fake_tool_server::held() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

bool fake_tool_server::wait_for_held(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return held_.size() >= n; });
}

std::size_t fake_tool_server::calls(const std::string& tool) const {
  std::lock_guard lock(mu_);
  auto it = tools_.find(tool);
  return it == tools_.end() ? 0 : it->second.calls;
}

std::size_t fake_tool_server::applied(const std::string& tool) const {
  std::lock_guard lock(mu_);
  auto it = tools_.find(tool);
  return it == tools_.end() ? 0 : it->second.applied;
}

std::size_t fake_tool_server::calls_for_key(const std::string& idempotency_key) const {
  std::lock_guard lock(mu_);
  auto it = key_calls_.find(idempotency_key);
  return it == key_calls_.end() ? 0 : it->second;
}

std::size_t fake_tool_server::total_calls() const {
  std::lock_guard lock(mu_);
  return log_.size();
}

json fake_tool_server::last_args(const std::string& tool) const {
  std::lock_guard lock(mu_);
  for (auto it = log_.rbegin(); it != log_.rend(); ++it)
    if (it->tool == tool) return it->args;
  return nullptr;
}

std::vector<tool_call_record> fake_tool_server::log() const {
  std::lock_guard lock(mu_);
  return log_;
}

tool_call_record fake_tool_server::last_call(const std::string& tool) const {
  std::lock_guard lock(mu_);
  for (auto it = log_.rbegin(); it != log_.rend(); ++it)
    if (it->tool == tool) return *it;
  throw std::logic_error("fake tool server: no call of " + tool + " yet");
}

json fake_tool_server::stats() const {
  std::lock_guard lock(mu_);
  json tools = json::object();
  for (const auto& [name, t] : tools_)
    if (t.calls > 0) tools[name] = {{"calls", t.calls}, {"applied", t.applied}};
  json keys = json::object();
  for (const auto& [key, n] : key_calls_) keys[key] = n;
  return {{"tools", std::move(tools)}, {"keys", std::move(keys)}, {"held", held_.size()}};
}

bool fake_tool_server::wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return log_.size() >= n; });
}

bool fake_tool_server::wait_for_calls(const std::string& tool, std::size_t n,
                                      std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] {
    auto it = tools_.find(tool);
    return it != tools_.end() && it->second.calls >= n;
  });
}

void fake_tool_server::on_request(net::http_request req, net::respond_fn respond) {
  std::string path = req.target.substr(0, req.target.find('?'));
  if (req.method == "POST" && path.rfind(tools_prefix, 0) == 0 && path.size() > tools_prefix.size())
    return on_tool_call(path.substr(tools_prefix.size()), std::move(req), std::move(respond));
  if (req.method == "GET" && path == "/stats") return respond(json_response(200, stats()));
  if (req.method == "POST" && path == "/release") {
    release();
    return respond(json_response(200, {{"released", true}}));
  }
  if (req.method == "PUT" && path.rfind(behaviours_prefix, 0) == 0 &&
      path.size() > behaviours_prefix.size()) {
    try {
      set_behaviour(path.substr(behaviours_prefix.size()),
                    tool_behaviour::from_json(json::parse(req.body)));
      return respond(json_response(200, {{"ok", true}}));
    } catch (const std::exception& e) {
      return respond(error_response(400, std::string("bad behaviour: ") + e.what()));
    }
  }
  respond(error_response(404, "fake tool server: no route " + req.method + " " + path));
}

void fake_tool_server::on_tool_call(const std::string& tool, net::http_request req,
                                    net::respond_fn respond) {
  std::string key(req.header("Idempotency-Key"));
  json args = json::parse(req.body, nullptr, false);
  if (args.is_discarded()) args = nullptr;

  net::http_response answer;
  std::chrono::milliseconds delay{0};
  std::optional<std::pair<uint64_t, std::chrono::milliseconds>> hold;  // id, timeout
  {
    std::lock_guard lock(mu_);
    auto& t = tools_[tool];
    const auto& b = t.behaviour;
    ++t.calls;
    if (!key.empty()) ++key_calls_[key];
    tool_call_record rec{tool, key, args, req.headers, false, false};
    std::string applied_key = tool + "\n" + key;
    auto earlier = key.empty() ? applied_answers_.end() : applied_answers_.find(applied_key);
    if (earlier != applied_answers_.end()) {
      rec.replayed = true;
      answer = earlier->second;
    } else if (t.calls <= b.fail_first) {
      answer = error_response(b.fail_status, "fake tool server: injected failure of " + tool);
      if (!b.retry_after.empty()) answer.headers.emplace_back("Retry-After", b.retry_after);
      if (b.fail_applied) {
        rec.applied = true;
        ++t.applied;
      }
    } else if (b.status < 200 || b.status >= 300) {
      if (b.raw_body)
        answer = {b.status, "text/plain", *b.raw_body, {}};
      else if (b.body)
        answer = json_response(b.status, *b.body);
      else
        answer = error_response(b.status,
                                "fake tool server: " + tool + " refuses the call" +
                                    (b.echo_header ? " with " + *b.echo_header + ": " +
                                                         std::string(req.header(*b.echo_header))
                                                   : ""));
    } else {
      rec.applied = true;
      ++t.applied;
      if (b.raw_body)
        answer = {b.status, "text/plain", *b.raw_body, {}};
      else {
        json body = b.body ? *b.body : json{{"ok", true}, {"tool", tool}, {"args", args}};
        if (b.echo_header && body.is_object())
          body["header"] = std::string(req.header(*b.echo_header));
        answer = json_response(b.status, body);
      }
      if (!key.empty()) applied_answers_[applied_key] = answer;
      delay = b.delay;
      if (b.hold) {
        uint64_t id = next_hold_id_++;
        held_.push_back({id, std::move(respond), answer});
        hold.emplace(id, b.hold_timeout);
      }
    }
    log_.push_back(std::move(rec));
    changed_.notify_all();
  }
  if (hold) {
    server_->run_after(hold->second, [this, id = hold->first] { answer_held(id); });
    return;
  }
  if (delay.count() > 0) {
    server_->run_after(
        delay, [respond = std::move(respond), answer = std::move(answer)] { respond(answer); });
    return;
  }
  respond(std::move(answer));
}

}  // namespace keel::test
