#pragma once
// A private network for partition tests, made of kernel network namespaces:
// one namespace per member, each with its own loopback (where the member's
// HTTP API listens) and one veth link into a bridge in a hub namespace,
// with the member's own address 10.99.0.K/24 on it (where its cluster port
// listens and peers connect). Each member namespace has an nftables table
// whose input hook drops packets from the addresses in its "deaf" set:
// deafen(a, b) makes `a` stop hearing `b`, in the kernel, while `b` may
// still hear `a`.
//
// Why a namespace per member and not one namespace with 127.0.0.11/12/13 on
// its loopback: a connection to any local address gets 127.0.0.1 (the
// loopback route's preferred source) as its source, whoever opens it, so
// members could be told apart only by port, and a packet of a connection
// opened by the other side carries one member's port and an ephemeral one.
// With a namespace each, every packet between members carries both
// members' addresses and a rule is one address match.
//
// Namespaces belong to threads: make() moves the calling thread into the
// hub (it stays there, and threads it starts begin there), in() runs a
// function with the calling thread in a member's namespace (what a child
// forked there, a socket opened there, and `ip`/`nft` run there belong
// to). The namespaces have no names: they live while the lab's descriptors
// or processes inside them do. The destructor moves the thread that called
// make() back to the namespace it came from.
//
// Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), `ip` (iproute2), `nft`
// (nftables) and the kernel's veth, bridge and nf_tables support; make()
// says which step failed where one is missing, so the test can skip.
//
// Thread-safety: make(), deafen(), hear() and the destructor on the thread
// that called make(); in() on any thread.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace keel::test::cluster {

class private_network {
 public:
  // Builds the hub and one namespace per id (addresses 10.99.0.1, .2, ...
  // in the order given). Returns nullptr and sets `why_not` when the
  // machine does not permit it; the calling thread is then where it was.
  static std::unique_ptr<private_network> make(const std::vector<std::string>& ids,
                                               std::string& why_not);
  ~private_network();
  private_network(const private_network&) = delete;
  private_network& operator=(const private_network&) = delete;

  // The member's address on the bridge.
  const std::string& address(const std::string& id) const;

  // Runs f() with the calling thread in member id's namespace and returns
  // what it returns; the thread goes back to its namespace afterwards, also
  // when f throws.
  template <class F>
  auto in(const std::string& id, F&& f) {
    entered guard(ns_fd(id));
    return f();
  }

  // From now on `listener` drops every packet from `speaker` (a no-op when
  // it already does). REQUIREs that nft took the rule.
  void deafen(const std::string& listener, const std::string& speaker);
  // `listener` hears `speaker` again (a no-op when it does).
  void hear(const std::string& listener, const std::string& speaker);
  // Both directions between a and b.
  void cut(const std::string& a, const std::string& b);
  void join(const std::string& a, const std::string& b);
  // Every member hears every other again.
  void heal_all();

 private:
  // Moves the calling thread into a namespace; back on destruction.
  class entered {
   public:
    explicit entered(int ns_fd);
    ~entered();
    entered(const entered&) = delete;
    entered& operator=(const entered&) = delete;

   private:
    int saved_ = -1;
  };

  private_network() = default;
  int ns_fd(const std::string& id) const;

  int origin_fd_ = -1;  // the namespace the creating thread came from
  int hub_fd_ = -1;
  std::map<std::string, std::pair<int, std::string>> members_;  // id -> (ns fd, address)
  std::map<std::string, std::set<std::string>> deaf_to_;        // listener -> speakers
};

}  // namespace keel::test::cluster
