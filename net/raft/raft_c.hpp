#pragma once
// The one place that includes libraft's C headers: they carry no extern "C"
// guards of their own. Everything in net/raft includes this instead.

extern "C" {
#include <raft.h>
}

#include <string>

namespace keel::raft {

// raft_apply and raft_barrier are both a request struct and a function; in
// C++ the plain name means the function. These name the structs.
using apply_request = struct ::raft_apply;
using barrier_request = struct ::raft_barrier;
using transfer_request = struct ::raft_transfer;

// libraft's name for a return code (RAFT_NOTLEADER -> "server is not the
// leader"), with the code, for errors and logs.
std::string error_text(int rv);

}  // namespace keel::raft
