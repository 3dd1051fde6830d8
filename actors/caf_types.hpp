#pragma once
// CAF vocabulary of actors/: atoms and the local-only message types. Only
// the actors' .cpp files include this (CAF headers are heavy).

#include <caf/all.hpp>

#include "actors/runtime.hpp"

namespace keel::actors {

using durable_atom = caf::atom_constant<caf::atom("durable")>;
using hibernate_atom = caf::atom_constant<caf::atom("hibernate")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using idle_atom = caf::atom_constant<caf::atom("idle")>;
using evict_atom = caf::atom_constant<caf::atom("evict")>;

// Spawns the shell of agent `name`, owned by `supervisor` (see
// agent_shell.cpp). REQUIRES: rt outlives the actor.
// `last_active` is stamped by the shell and read by the supervisor's idle
// sweep.
caf::actor spawn_agent_shell(caf::local_actor* parent, runtime* rt, caf::actor supervisor,
                             std::string name, std::shared_ptr<std::atomic<int64_t>> last_active);
// The node's supervisor: name -> live shell, single-flight activation.
caf::actor spawn_supervisor(caf::actor_system& sys, runtime* rt);

}  // namespace keel::actors

// Requests carry callbacks and never cross the network.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::actors::request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::actors::evict_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(keel::status)
