#include "support/fake_openai_server.hpp"

#include <stdexcept>

#include "support/fake_http.hpp"

namespace keel::test {

using json = nlohmann::json;

namespace {

// OpenAI's error shape, which the provider quotes.
net::http_response openai_error(unsigned status, const std::string& message) {
  return json_response(
      status, {{"error", {{"message", message}, {"type", "fake_error"}, {"code", nullptr}}}});
}

net::http_response render(const scripted_reply& r, std::size_t call_no, const json& request) {
  if (r.raw_body) return {200, "application/json", *r.raw_body, {}};
  json message = {{"role", "assistant"}, {"content", r.content ? json(*r.content) : json(nullptr)}};
  if (!r.tool_calls.empty()) {
    json calls = json::array();
    for (std::size_t i = 0; i < r.tool_calls.size(); ++i) {
      const auto& c = r.tool_calls[i];
      std::string id =
          !c.id.empty() ? c.id : "call_" + std::to_string(call_no) + "_" + std::to_string(i);
      calls.push_back({{"id", id},
                       {"type", "function"},
                       {"function",
                        {{"name", c.name},
                         {"arguments", c.raw_arguments ? *c.raw_arguments : c.arguments.dump()}}}});
    }
    message["tool_calls"] = std::move(calls);
  }
  std::string finish = !r.finish_reason.empty() ? r.finish_reason
                       : r.tool_calls.empty()   ? "stop"
                                                : "tool_calls";
  json body = {
      {"id", "chatcmpl-fake-" + std::to_string(call_no)},
      {"object", "chat.completion"},
      {"created", 0},
      {"model", request.is_object() ? request.value("model", "fake") : "fake"},
      {"choices",
       json::array({{{"index", 0}, {"message", std::move(message)}, {"finish_reason", finish}}})}};
  if (!r.omit_usage)
    body["usage"] = {{"prompt_tokens", r.prompt_tokens},
                     {"completion_tokens", r.completion_tokens},
                     {"total_tokens", r.prompt_tokens + r.completion_tokens}};
  return json_response(200, body);
}

}  // namespace

scripted_reply scripted_reply::text(std::string content) {
  scripted_reply r;
  r.content = std::move(content);
  return r;
}

scripted_reply scripted_reply::tool_call(std::string name, json arguments, std::string id) {
  scripted_reply r;
  r.tool_calls.push_back({std::move(id), std::move(name), std::move(arguments), std::nullopt});
  return r;
}

scripted_reply scripted_reply::from_json(const json& j) {
  if (!j.is_object()) throw std::runtime_error("a scripted reply must be a JSON object");
  scripted_reply r;
  if (auto c = j.find("content"); c != j.end() && !c->is_null()) r.content = c->get<std::string>();
  if (auto calls = j.find("tool_calls"); calls != j.end()) {
    for (const auto& c : calls->get<std::vector<json>>()) {
      scripted_tool_call call;
      call.id = c.value("id", "");
      call.name = c.at("name").get<std::string>();
      if (auto a = c.find("arguments"); a != c.end()) call.arguments = *a;
      if (auto raw = c.find("raw_arguments"); raw != c.end())
        call.raw_arguments = raw->get<std::string>();
      r.tool_calls.push_back(std::move(call));
    }
  }
  if (auto u = j.find("usage"); u != j.end()) {
    if (u->is_null()) {
      r.omit_usage = true;
    } else {
      r.prompt_tokens = u->value("prompt_tokens", r.prompt_tokens);
      r.completion_tokens = u->value("completion_tokens", r.completion_tokens);
    }
  }
  r.finish_reason = j.value("finish_reason", "");
  if (auto raw = j.find("raw_body"); raw != j.end()) r.raw_body = raw->get<std::string>();
  return r;
}

std::string recorded_request::header(std::string_view name) const {
  return find_header(headers, name);
}

fake_openai_server::fake_openai_server(uint16_t port) {
  // Started in the body: every member the handler touches exists by now.
  server_ = open_fake_server("fake openai server", port,
                             [this](net::http_request req, net::respond_fn respond) {
                               on_request(std::move(req), std::move(respond));
                             });
}

fake_openai_server::~fake_openai_server() {
  stop();
}

void fake_openai_server::stop() {
  server_->stop();
}

uint16_t fake_openai_server::port() const {
  return server_->port();
}

std::string fake_openai_server::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port()) + "/v1";
}

void fake_openai_server::push(scripted_reply reply) {
  std::lock_guard lock(mu_);
  replies_.push_back(std::move(reply));
}

void fake_openai_server::set_default_reply(scripted_reply reply) {
  std::lock_guard lock(mu_);
  default_reply_ = std::move(reply);
}

void fake_openai_server::fail_next(unsigned n, unsigned status, std::string message) {
  std::lock_guard lock(mu_);
  fail_left_ = n;
  fail_status_ = status;
  fail_message_ = std::move(message);
}

void fake_openai_server::delay_next(unsigned n, std::chrono::milliseconds delay) {
  std::lock_guard lock(mu_);
  delay_left_ = n;
  delay_ = delay;
}

void fake_openai_server::fail_if_contacted(bool on) {
  std::lock_guard lock(mu_);
  forbidden_ = on;
}

std::size_t fake_openai_server::calls() const {
  std::lock_guard lock(mu_);
  return requests_.size();
}

std::size_t fake_openai_server::forbidden_contacts() const {
  std::lock_guard lock(mu_);
  return forbidden_contacts_;
}

std::size_t fake_openai_server::replies_left() const {
  std::lock_guard lock(mu_);
  return replies_.size();
}

std::vector<recorded_request> fake_openai_server::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

recorded_request fake_openai_server::last_request() const {
  std::lock_guard lock(mu_);
  if (requests_.empty()) throw std::logic_error("fake openai server: no request yet");
  return requests_.back();
}

bool fake_openai_server::wait_for_calls(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return called_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

std::pair<net::http_response, std::chrono::milliseconds> fake_openai_server::plan(
    const net::http_request& req) {
  std::lock_guard lock(mu_);
  recorded_request rec;
  rec.raw_body = req.body;
  rec.body = json::parse(req.body, nullptr, false);
  if (rec.body.is_discarded()) rec.body = nullptr;
  rec.headers = req.headers;
  requests_.push_back(std::move(rec));
  called_.notify_all();
  std::size_t call_no = requests_.size();
  const json& body = requests_.back().body;

  std::chrono::milliseconds delay{0};
  if (delay_left_ > 0) {
    --delay_left_;
    delay = delay_;
  }
  if (forbidden_) {
    ++forbidden_contacts_;
    return {openai_error(400, "fake openai server: contacted while told not to be (call " +
                                  std::to_string(call_no) + ")"),
            delay};
  }
  if (fail_left_ > 0) {
    --fail_left_;
    return {openai_error(fail_status_, fail_message_), delay};
  }
  if (!replies_.empty()) {
    scripted_reply r = std::move(replies_.front());
    replies_.pop_front();
    return {render(r, call_no, body), delay};
  }
  if (default_reply_) return {render(*default_reply_, call_no, body), delay};
  return {openai_error(400, "fake openai server: no scripted reply left (call " +
                                std::to_string(call_no) + ")"),
          delay};
}

void fake_openai_server::on_request(net::http_request req, net::respond_fn respond) {
  std::string path = req.target.substr(0, req.target.find('?'));
  if (req.method == "GET" && path == "/stats") {
    std::lock_guard lock(mu_);
    return respond(json_response(200, {{"calls", requests_.size()},
                                       {"forbidden_contacts", forbidden_contacts_},
                                       {"replies_left", replies_.size()}}));
  }
  if (req.method == "POST" && path == "/replies") {
    try {
      auto list = json::parse(req.body);
      if (!list.is_array()) throw std::runtime_error("expected a JSON array of replies");
      std::vector<scripted_reply> parsed;
      for (const auto& r : list) parsed.push_back(scripted_reply::from_json(r));
      std::lock_guard lock(mu_);
      for (auto& r : parsed) replies_.push_back(std::move(r));
      return respond(json_response(200, {{"replies_left", replies_.size()}}));
    } catch (const std::exception& e) {
      return respond(openai_error(400, std::string("bad replies: ") + e.what()));
    }
  }
  if (req.method != "POST" || path != "/v1/chat/completions")
    return respond(openai_error(404, "fake openai server: no route " + req.method + " " + path));

  auto [response, delay] = plan(req);
  if (delay.count() > 0)
    server_->run_after(delay, [respond = std::move(respond), response = std::move(response)] {
      respond(response);
    });
  else
    respond(std::move(response));
}

}  // namespace keel::test
