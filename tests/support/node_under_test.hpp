#pragma once
// A keeld child for HTTP API tests, with small request helpers. Uses
// doctest assertions: include it from test files only.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "http/client.hpp"
#include "support/http_replay_check.hpp"
#include "support/keeld_process.hpp"
#include "support/ledger_pages.hpp"
#include "support/temp_dir.hpp"
#include "support/wait.hpp"

namespace keel::test::api {

using nlohmann::json;

struct reply {
  unsigned status = 0;
  std::string raw;
  std::string content_type;
  json body;  // discarded when the answer is not JSON

  std::string error_code() const {
    return body.is_object() && body.contains("error") ? body["error"].value("code", "") : "";
  }
  std::string error_message() const {
    return body.is_object() && body.contains("error") ? body["error"].value("message", "") : "";
  }
};

inline std::string agent_path(std::string_view name) {
  return "/v1/agents/" + net::percent_encode(name);
}

// One keeld in its own data directory with a client connected to it. When
// the test lets go of it, every ledger it left must replay strictly.
class node_under_test {
 public:
  explicit node_under_test(std::vector<std::string> extra_args = {})
      : keeld_(KEEL_KEELD_PATH, dir_.str(), extra_args) {
    for (std::size_t i = 0; i + 1 < extra_args.size(); ++i)
      if (extra_args[i] == "--token") token_ = extra_args[i + 1];
    start();
  }
  ~node_under_test() { check_replays(); }
  node_under_test(const node_under_test&) = delete;
  node_under_test& operator=(const node_under_test&) = delete;

  // The strict replay check (support/http_replay_check.hpp), if keeld runs.
  void check_replays() {
    if (keeld_.running()) check_strict_replays_over_http(keeld_.port(), token_);
  }

  void start() {
    REQUIRE_MESSAGE(keeld_.start(), keeld_.output());
    REQUIRE(client_.connect("127.0.0.1", keeld_.port()).is_ok());
  }
  void kill9() { keeld_.kill9(); }
  net::http_client& client() { return client_; }
  const std::filesystem::path& dir() const { return dir_.path(); }

  reply call(std::string_view method, const std::string& target, std::string_view body = {},
             const net::http_client::header_list& headers = {}) {
    auto r = client_.request(method, target, body, headers);
    REQUIRE_MESSAGE(r.is_ok(), std::string(method)
                                   << " " << target << ": " << r.error().to_string());
    reply out;
    out.status = r->status;
    out.raw = r->body;
    out.content_type = r->content_type;
    out.body = json::parse(out.raw, nullptr, false);
    return out;
  }
  reply call_json(std::string_view method, const std::string& target, const json& body) {
    return call(method, target, body.dump());
  }

  json spawn(const std::string& name, json input = nullptr) {
    json req{{"name", name}, {"type", "counter"}};
    if (!input.is_null()) req["input"] = std::move(input);
    auto r = call_json("POST", "/v1/agents", req);
    REQUIRE_MESSAGE(r.status == 201, r.raw);
    return r.body;
  }
  reply send(const std::string& name, const json& message, const std::string& query = "") {
    return call_json("POST", agent_path(name) + "/messages" + query, message);
  }
  json view(const std::string& name) {
    auto r = call("GET", agent_path(name));
    REQUIRE_MESSAGE(r.status == 200, r.raw);
    return r.body;
  }
  // Every ledger event, read in pages of `page`.
  std::vector<json> ledger(const std::string& name, std::size_t page = 1000) {
    auto all = read_ledger_pages(
        [this](const std::string& target) {
          auto r = call("GET", target);
          return std::pair<unsigned, json>(r.status, r.body);
        },
        agent_path(name), page);
    REQUIRE_MESSAGE(all.has_value(), "the ledger of " << name << " could not be read");
    return *all;
  }
  // The value of an unlabelled sample in /metrics; nullopt when absent.
  std::optional<double> metric(const std::string& name) {
    auto r = call("GET", "/metrics");
    REQUIRE(r.status == 200);
    std::string key = "\n" + name + " ";
    auto at = ("\n" + r.raw).find(key);
    if (at == std::string::npos) return std::nullopt;
    return std::stod(r.raw.substr(at + key.size() - 1));
  }

 private:
  test::temp_dir dir_{"keel-api"};
  test::keeld_process keeld_;
  net::http_client client_;
  std::string token_;  // from --token, for the replay check
};

inline int count_type(const std::vector<json>& events, std::string_view type) {
  return static_cast<int>(std::count_if(events.begin(), events.end(),
                                        [&](const json& e) { return e["type"] == type; }));
}

}  // namespace keel::test::api
