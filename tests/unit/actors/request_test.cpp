// The typed requests of the runtime path: every completion callback runs at
// most once, a request dropped with callbacks pending fails them, and an
// effect's outcome becomes the agent's input field for field.

#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "actors/effect_dispatch.hpp"
#include "actors/request.hpp"

using namespace keel;
using namespace keel::actors;

namespace {

// What one callback was called with, in order.
template <class T>
struct calls {
  std::vector<result<T>> got;
  callback<T> make() {
    return [this](result<T> r) { got.push_back(std::move(r)); };
  }
};

}  // namespace

TEST_CASE("a request destroyed with its callbacks pending fails each with unavailable once") {
  calls<send_ack> accepted;
  calls<agent_reply> replied;
  {
    auto r = make_request("a/1", message_call{{accepted.make(), replied.make()}, "m-1", "c", 1});
    auto copy = r;  // the last owner's release is what fails them
  }
  REQUIRE(accepted.got.size() == 1);
  REQUIRE(replied.got.size() == 1);
  CHECK(accepted.got[0].error().error_code() == code::unavailable);
  CHECK(replied.got[0].error().error_code() == code::unavailable);
}

TEST_CASE("a callback that ran is not failed again when its request goes") {
  calls<send_ack> accepted;
  calls<agent_reply> replied;
  {
    auto r = make_request("a/1", signal_call{{accepted.make(), replied.make()}, "pause", {}, ""});
    inbound_calls* in = inbound_of(*r);
    REQUIRE(in != nullptr);
    call_once(in->accepted, result<send_ack>(send_ack{"pause", 3, false}));
    call_once(in->accepted, result<send_ack>(send_ack{"pause", 4, false}));
  }
  REQUIRE(accepted.got.size() == 1);
  REQUIRE(accepted.got[0]);
  CHECK(accepted.got[0]->seq == 3);
  REQUIRE(replied.got.size() == 1);
  CHECK(replied.got[0].error().error_code() == code::unavailable);
}

TEST_CASE("failing a request reaches the callbacks of its own kind with the given status") {
  SUBCASE("effect result") {
    calls<json> answered;
    auto r = make_request("a/1", effect_result_call{{}, answered.make()});
    CHECK(inbound_of(*r) == nullptr);
    fail(*r, error(code::conflict, "no"));
    r.reset();
    REQUIRE(answered.got.size() == 1);
    CHECK(answered.got[0].error().error_code() == code::conflict);
  }
  SUBCASE("spawn") {
    calls<agent_view> viewed;
    auto r = make_request("a/1", spawn_call{"counter", nullptr, viewed.make()});
    fail(*r, error(code::invalid_argument, "bad"));
    r.reset();
    REQUIRE(viewed.got.size() == 1);
    CHECK(viewed.got[0].error().error_code() == code::invalid_argument);
  }
  SUBCASE("upgrade") {
    calls<json> answered;
    auto r = make_request("a/1", upgrade_call{"", "ops", answered.make()});
    CHECK(call_of<upgrade_call>(r).by == "ops");
    fail(*r, error(code::not_found, "gone"));
    r.reset();
    REQUIRE(answered.got.size() == 1);
    CHECK(answered.got[0].error().error_code() == code::not_found);
  }
  SUBCASE("a timer has nothing to fail") {
    auto r = make_request("a/1", timer_call{7});
    fail(*r, error(code::unavailable, "stopping"));
    CHECK(call_of<timer_call>(r).timer_id == 7);
  }
}

TEST_CASE("an effect outcome becomes the agent's input with every field as it was produced") {
  SUBCASE("a success") {
    auto in = result_input(12, 3, effect_outcome::success({{"charged", 5}}));
    CHECK(in.effect == 12);
    CHECK(in.attempt == 3);
    CHECK(in.ok);
    CHECK(in.result == json{{"charged", 5}});
    CHECK(in.error.empty());
    CHECK_FALSE(in.retryable);
    CHECK_FALSE(in.maybe_applied);
  }
  SUBCASE("a failure that may have been applied") {
    auto in = result_input(9, 2, effect_outcome::unknown("reset after send", true));
    CHECK(in.effect == 9);
    CHECK(in.attempt == 2);
    CHECK_FALSE(in.ok);
    CHECK(in.result.is_null());
    CHECK(in.error == "reset after send");
    CHECK(in.retryable);
    CHECK(in.maybe_applied);
  }
  SUBCASE("a failure that proves nothing happened") {
    auto in = result_input(4, 1, effect_outcome::failure("refused", false));
    CHECK_FALSE(in.ok);
    CHECK(in.error == "refused");
    CHECK_FALSE(in.retryable);
    CHECK_FALSE(in.maybe_applied);
  }
}

TEST_CASE("a reply's record form is what dedupe entries hold, and reads back as the same reply") {
  SUBCASE("an answer") {
    agent::reply_effect fx;
    fx.ok = true;
    fx.body = json{{"total", 4}};
    const agent_reply r = reply_of(fx);
    CHECK(r.ok);
    CHECK(r.body == json{{"total", 4}});
    const json rec = reply_record(r);
    CHECK(rec.dump() == R"({"body":{"total":4},"ok":true})");
    const agent_reply back = reply_from_record(rec);
    CHECK(back.ok);
    CHECK(back.body == r.body);
    CHECK(back.code.empty());
    CHECK(back.message.empty());
  }
  SUBCASE("a refusal") {
    agent::reply_effect fx;
    fx.ok = false;
    fx.code = "invalid_message";
    fx.message = "expected a number";
    const agent_reply r = reply_of(fx);
    const json rec = reply_record(r);
    CHECK(rec.dump() == R"({"code":"invalid_message","message":"expected a number","ok":false})");
    const agent_reply back = reply_from_record(rec);
    CHECK_FALSE(back.ok);
    CHECK(back.body.is_null());
    CHECK(back.code == "invalid_message");
    CHECK(back.message == "expected a number");
  }
  SUBCASE("no answer") {
    CHECK(reply_record(agent_reply{true, nullptr, {}, {}}).dump() == R"({"body":null,"ok":true})");
  }
}
