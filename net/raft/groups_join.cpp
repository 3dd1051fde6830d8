// Configuration changes of a group. Joining (groups.hpp): a member that
// lost its copy of a group asks the group's leader to take it in under its
// new raft id; the leader moves the configuration one committed step at a
// time. Recovery (groups_options::recover): the replica left of a group
// that lost its majority becomes its only voter.

#include <chrono>
#include <utility>

#include "base/bytes.hpp"
#include "base/log.hpp"
#include "net/raft/groups_replica.hpp"
#include "net/raft/identity.hpp"

namespace keel::raft {

namespace {

constexpr std::size_t join_request_size = 4 + 8;

}  // namespace

const char* server_role_name(int role) {
  switch (role) {
    case RAFT_VOTER:
      return "voter";
    case RAFT_STANDBY:
      return "standby";
    default:
      return "spare";
  }
}

std::string encode_join_request(group_id g, raft_id id) {
  std::string out;
  out.reserve(join_request_size);
  put_u32_be(out, g);
  put_u64_be(out, id);
  return out;
}

result<std::pair<group_id, raft_id>> decode_join_request(std::string_view bytes) {
  if (bytes.size() != join_request_size)
    return error(code::corruption, "a join request is " + std::to_string(join_request_size) +
                                       " bytes, not " + std::to_string(bytes.size()));
  const raft_id id = get_u64_be(bytes.data() + 4);
  if (id == 0) return error(code::corruption, "a join request names raft id 0");
  return std::pair<group_id, raft_id>{get_u32_be(bytes.data()), id};
}

void groups::ask_to_join(replica& r) {
  if (!r.spec.join || r.joined) return;
  for (unsigned i = 0; i < r.r.configuration.n; ++i) {
    const raft_server& srv = r.r.configuration.servers[i];
    if (srv.id != opts_.self_id || srv.role != RAFT_VOTER) continue;
    r.joined = true;
    log::info("joined a raft group as a voter under this member's new raft id",
              {{"group", std::to_string(r.spec.id)}, {"raft_id", std::to_string(opts_.self_id)}});
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now < r.next_ask) return;
  r.next_ask = now + std::chrono::milliseconds(opts_.election_timeout_ms / 2);
  const std::string request = encode_join_request(r.spec.id, opts_.self_id);
  for (const auto& [id, address] : r.spec.voters) {
    if (address == opts_.self) continue;
    // Only the leader answers with a step; the others refuse (not leader).
    opts_.out->join(address, request, [note = r.joining](result<std::string> answer) {
      if (!answer) return;
      std::lock_guard lk(note->mu);
      note->answer = std::move(*answer);
    });
  }
}

void groups::serve_join(std::string from, std::string request,
                        std::function<void(result<std::string>)> respond) {
  auto req = decode_join_request(request);
  if (!req) return respond(req.error());
  replica* r = find(req->first);
  if (r == nullptr) return respond(group_unavailable(req->first, "not replicated on this member"));
  const raft_id id = req->second;
  const bool posted = loop_->post([this, r, id, from = std::move(from), respond] {
    if (!r->started || r->closing) return respond(group_unavailable(r->spec.id, "stopped"));
    // Only a replica the group's placement lists, and only for an
    // incarnation of its own id.
    bool listed = false;
    for (const auto& voter : r->spec.voters)
      listed |= voter.second == from && original_id(voter.first) == original_id(id);
    if (!listed)
      return respond(error(code::unauthorized, from + " under raft id " + std::to_string(id) +
                                                   " is not a replica of group " +
                                                   std::to_string(r->spec.id)));
    respond(advance_join(*r, id, from));
  });
  if (!posted) respond(error(code::unavailable, "the node's groups are stopped"));
}

result<std::string> groups::advance_join(replica& r, raft_id id, const std::string& address) {
  if (raft_state(&r.r) != RAFT_LEADER || !r.ready)
    return group_unavailable(r.spec.id, "not its ready leader");
  if (id == opts_.self_id || address == opts_.self)
    return error(code::invalid_argument, "a leader does not join its own group");
  if (r.changing) return group_unavailable(r.spec.id, "a configuration change is in flight");
  const raft_server* joining = nullptr;
  const raft_server* former = nullptr;
  unsigned at = 0;
  for (unsigned i = 0; i < r.r.configuration.n; ++i) {
    const raft_server& srv = r.r.configuration.servers[i];
    if (srv.id == id) {
      joining = &srv;
      at = i;
    } else if (address == srv.address && original_id(srv.id) == original_id(id)) {
      former = &srv;  // another incarnation of the same member
    }
  }
  // An ask from an incarnation older than the one the group holds (sent
  // before that member lost its data again, and arriving late) must not
  // remove its successor.
  if (former != nullptr && incarnation_of(former->id) > incarnation_of(id))
    return error(code::conflict, "group " + std::to_string(r.spec.id) + " holds " + address +
                                     " under a newer raft id (" + std::to_string(former->id) +
                                     ") than " + std::to_string(id));
  if (former == nullptr && joining != nullptr && joining->role == RAFT_VOTER) {
    if (r.catching_up == id) r.catching_up = 0;
    return std::string("voter");
  }

  auto change = std::make_unique<pending_change>();
  change->owner = this;
  change->group = &r;
  change->id = id;
  change->address = address;
  change->req.data = change.get();
  auto done = [](raft_change* req, int rv) {
    std::unique_ptr<pending_change> c(static_cast<pending_change*>(req->data));
    replica& g = *c->group;
    g.changing = false;
    const std::string group = std::to_string(g.spec.id);
    const std::string raft_id = std::to_string(c->id);
    if (rv != 0) {
      log::warn("raft group configuration change failed; the member's next ask starts it again",
                {{"group", group},
                 {"member", c->address},
                 {"raft_id", raft_id},
                 {"step", c->step},
                 {"error", error_text(rv)}});
      return;
    }
    log::info("raft group configuration changed",
              {{"group", group}, {"member", c->address}, {"raft_id", raft_id}, {"step", c->step}});
    // The next step at once; from a task, not inside libraft's callback.
    groups* owner = c->owner;
    owner->loop_->post([owner, &g, id = c->id, address = c->address] {
      if (!g.started || g.closing) return;
      auto next = owner->advance_join(g, id, address);
      if (!next && next.error().error_code() != code::unavailable)
        log::warn("joining a member to a raft group stopped",
                  {{"group", std::to_string(g.spec.id)}, {"error", next.error().to_string()}});
    });
  };

  int rv = 0;
  if (former != nullptr) {
    // The member's incarnation that lost its data: it can no longer vote
    // for what it acknowledged.
    change->step = "removing its former raft id " + std::to_string(former->id);
    rv = raft_remove(&r.r, &change->req, former->id, done);
  } else if (joining == nullptr) {
    change->step = "adding it as a spare";
    rv = raft_add(&r.r, &change->req, id, address.c_str(), done);
  } else if (joining->role == RAFT_SPARE) {
    change->step = "making it a standby: it gets the log";
    rv = raft_assign(&r.r, &change->req, id, RAFT_STANDBY, done);
  } else {
    const raft_index match = r.r.leader_state.progress[at].match_index;
    if (match < r.r.commit_index) {
      r.catching_up = id;
      r.catching_up_address = address;
      return "catching up: " + std::to_string(match) + " of " + std::to_string(r.r.commit_index);
    }
    r.catching_up = 0;
    change->step = "making it a voter";
    rv = raft_assign(&r.r, &change->req, id, RAFT_VOTER, done);
  }
  if (rv != 0) {
    // libraft 0.15's raft_assign keeps the request as the pending change
    // even when it fails: it must not point at what is freed here.
    if (r.r.leader_state.change == &change->req) r.r.leader_state.change = nullptr;
    return group_unavailable(r.spec.id,
                             change->step + ": " + error_text(rv) + ": " + raft_errmsg(&r.r));
  }
  r.changing = true;
  log::info("raft group configuration change started", {{"group", std::to_string(r.spec.id)},
                                                        {"member", address},
                                                        {"raft_id", std::to_string(id)},
                                                        {"step", change->step}});
  std::string step = change->step;
  change.release();  // the callback owns it
  return step;
}

void groups::promote_caught_up(replica& r) {
  if (r.catching_up == 0 || r.changing || !r.ready) return;
  for (unsigned i = 0; i < r.r.configuration.n; ++i) {
    const raft_server& srv = r.r.configuration.servers[i];
    if (srv.id != r.catching_up) continue;
    if (srv.role != RAFT_STANDBY || r.r.leader_state.progress[i].match_index < r.r.commit_index)
      return;
    auto step = advance_join(r, r.catching_up, r.catching_up_address);
    if (!step)
      log::warn("making a caught-up standby a voter failed; its next ask tries again",
                {{"group", std::to_string(r.spec.id)}, {"error", step.error().to_string()}});
    return;
  }
  r.catching_up = 0;  // gone from the configuration
}

keel::status groups::recover(replica& r, uint64_t at) {
  const std::string name = "group " + std::to_string(r.spec.id) + ": ";
  auto last = log_store(*opts_.db, r.spec.id).last_index();
  if (!last) return last.error();
  if (*last != at)
    return error(code::invalid_argument,
                 name + "asked to recover at log index " + std::to_string(at) +
                     ", but its log here ends at " + std::to_string(*last) +
                     (*last == 0 ? " (no state: nothing to recover)"
                                 : ": recover only the replica that holds the most, at the index "
                                   "it shows now"));
  raft_configuration conf;
  raft_configuration_init(&conf);
  int rv = raft_configuration_add(&conf, opts_.self_id, opts_.self.c_str(), RAFT_VOTER);
  if (rv == 0) rv = raft_recover(&r.r, &conf);
  raft_configuration_close(&conf);
  if (rv != 0)
    return error(code::io_error, name + "recover: " + error_text(rv) + ": " + raft_errmsg(&r.r));
  log::warn("raft group recovered: this member is its only voter; the other replicas join again",
            {{"group", std::to_string(r.spec.id)}, {"index", std::to_string(at + 1)}});
  return keel::status::ok();
}

raft_id groups::preferred_id(const replica& r) const {
  if (r.spec.voters.empty()) return 0;
  const std::string& address = r.spec.voters.front().second;
  for (unsigned i = 0; i < r.r.configuration.n; ++i)
    if (address == r.r.configuration.servers[i].address) return r.r.configuration.servers[i].id;
  return 0;
}

}  // namespace keel::raft
