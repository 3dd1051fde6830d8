#pragma once
// Reading a whole ledger over HTTP, page by page, the way a client must:
// a page may end before its limit (its byte bound), and "next" says where
// the ledger goes on.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::test {

// `get(target)` answers {status, body}. Reads GET <agent_path>/ledger from
// seq 1 in pages of `page`; nullopt when a page is not a 200.
template <class Get>
std::optional<std::vector<nlohmann::json>> read_ledger_pages(Get&& get,
                                                             const std::string& agent_path,
                                                             std::size_t page = 1000) {
  std::vector<nlohmann::json> all;
  uint64_t from = 1;
  for (int pages = 0; pages < 100'000; ++pages) {
    std::pair<unsigned, nlohmann::json> r =
        get(agent_path + "/ledger?from=" + std::to_string(from) + "&limit=" + std::to_string(page));
    if (r.first != 200) return std::nullopt;
    for (const auto& e : r.second["events"]) all.push_back(e);
    if (!r.second["next"].is_number_unsigned()) break;
    from = r.second["next"].get<uint64_t>();
  }
  return all;
}

}  // namespace keel::test
